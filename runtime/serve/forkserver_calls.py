"""Imported in livekit's forkserver with job.CALL_MODULES (process executor; under
the thread executor in serve's process at the first prewarm): what a call's first
steps would otherwise do on its job's event loop, done once before any call. livekit's
event-loop monitor warned on each browser call (GET /talk) and simulated call; py-spy
on the call's job process showed what blocked it:

- livekit's mock room, the room of a fake job: ``create_autospec`` of rtc.Room reads
  the signature of every method (unittest.mock, inspect); 290-640 ms of blocked loop
  at the call's start;
- TLS contexts, each a parse of the CA bundle: the OpenAI client's (made with the
  call's LLM, 200-300 ms blocked) and livekit's http session's (made at the job's
  close, ~50 ms);
- livekit's ``llm.ChatMessage``, whose pydantic model is left incomplete at import
  (forward references): the first message made, the instructions at the session's
  start, rebuilt it (about 540 ms blocked on a loaded machine, 30 ms of CPU).

All are cached per process, so each job process forked after this starts with them
(copy-on-write). Nothing here starts a thread: the fork stays safe. A step that fails
(SSL_CERT_FILE naming no file) is left to the call, which fails as it did before: a
preload that raised would stop the forkserver, and with it every call.
"""

import contextlib

from livekit.agents import llm

from ..core.livekit_compat import warm_job_process
from ..plugins.builtin.openai import tls_context

for step in (warm_job_process, tls_context, lambda: llm.ChatMessage(role="system", content=["warm-up"])):
    with contextlib.suppress(Exception):
        step()
