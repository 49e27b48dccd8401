"""Imported in livekit's forkserver when an agent serve starts with uses silero
(serve/preload.py): the process's silero ONNX session is made there, once, so every job
process forked after it runs its VADs on that copy-on-write session instead of making
its own (~11 MiB each). Making the session starts no thread (onnxruntime's pools are
off: silero asks for one intra- and one inter-op thread), so the fork stays safe."""

from ..core.livekit_compat import silero_session

silero_session()
