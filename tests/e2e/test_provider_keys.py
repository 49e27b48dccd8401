"""Every provider's key reaches its provider from a `serve` job (issue 11, item 1).

A serve job rebuilds its spec from what the parent published; a secret field
(`api_key`) must survive that trip as the real value. Each provider runs as the
real livekit plugin against a local fake that records the key it was sent; the
simulated call uses `"speech": true` so the pipeline's STT and TTS are called too.
Keys are given as a mounted Kubernetes Secret holds them: ending in a newline.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI
from fakes.openai_realtime import FakeRealtime
from fakes.speech import FakeCartesia, FakeDeepgram
from helpers import write
from serve_harness import Serve

KEYS = {name: f"{name.lower().replace('_', '-')}-91b2d4e7\n" for name in (
    "LLM_KEY", "OPENAI_STT_KEY", "OPENAI_TTS_KEY", "REALTIME_KEY", "DEEPGRAM_KEY", "CARTESIA_KEY", "PLUGIN_KEY")}

KEYED_PLUGIN = '''
from pydantic import BaseModel, ConfigDict, SecretStr

import voice_runtime


class KeyedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    endpoint: str
    token: SecretStr


def make_llm(options):
    from livekit.plugins import openai

    return openai.LLM(model="gpt-4o-mini", base_url=options.endpoint, api_key=options.token.get_secret_value())


@voice_runtime.hookimpl
def voice_runtime_register_providers(register):
    register("llm", "keyed", KeyedOptions, make_llm)
'''


@pytest.fixture
def fakes() -> Iterator[dict[str, object]]:
    servers = {"openai": FakeOpenAI(), "realtime": FakeRealtime(), "deepgram": FakeDeepgram(),
               "cartesia": FakeCartesia()}
    for server in servers.values():
        server.start_in_thread()
    yield servers
    for server in servers.values():
        server.stop_thread()


def write_agents(root: Path, fakes: dict) -> Path:
    openai_url, rt_url = fakes["openai"].base_url, fakes["realtime"].base_url
    dg_url, ca_url = fakes["deepgram"].root_url + "/v1/listen", fakes["cartesia"].root_url
    agents = root / "agents.d"
    llm = f'{{provider: openai, model: gpt-4o-mini, base_url: "{openai_url}", api_key: "${{LLM_KEY}}"}}'
    write(agents / "deepgram-cartesia.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You answer.
pipeline:
  stt: {{provider: deepgram, base_url: "{dg_url}", api_key: "${{DEEPGRAM_KEY}}"}}
  llm: {llm}
  tts: {{provider: cartesia, voice: v1, base_url: "{ca_url}", api_key: "${{CARTESIA_KEY}}"}}
""")
    write(agents / "openai-audio.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You answer.
pipeline:
  stt: {{provider: openai, model: whisper-1, base_url: "{openai_url}", api_key: "${{OPENAI_STT_KEY}}"}}
  llm: {llm}
  tts: {{provider: openai, model: tts-1, voice: ash, base_url: "{openai_url}", api_key: "${{OPENAI_TTS_KEY}}"}}
""")
    write(agents / "realtime.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You answer.
realtime: {{provider: openai, base_url: "{rt_url}", api_key: "${{REALTIME_KEY}}"}}
""")
    write(agents / "plugin.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You answer.
pipeline:
  llm: {{provider: keyed, endpoint: "{openai_url}", token: "${{PLUGIN_KEY}}"}}
  text_only: true
""")
    write(root / "plugins" / "keyed.py", KEYED_PLUGIN)
    return agents


def simulate_speech(serve: Serve, agent: str, turn: str) -> None:
    data = json.dumps({"agent": agent, "turns": [turn], "speech": True}).encode()
    req = urllib.request.Request(serve.url("/simulate"), data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def key(name: str) -> str:
    return KEYS[name].rstrip("\n")  # a mounted file's newline is not part of the key


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_every_provider_receives_its_real_key_from_a_serve_job(tmp_path: Path, fakes: dict, executor: str) -> None:
    agents = write_agents(tmp_path, fakes)
    openai, realtime, deepgram, cartesia = fakes["openai"], fakes["realtime"], fakes["deepgram"], fakes["cartesia"]
    with Serve(agents, "--executor", executor, env=KEYS) as serve:
        serve.wait_for(lambda: len(serve.status()["agents"]) == 4 and serve.status()["ready"], message="4 agents")
        for agent in ("deepgram-cartesia", "openai-audio", "realtime", "plugin"):
            simulate_speech(serve, agent, "what time is it?")
        serve.wait_for(lambda: deepgram.requests and cartesia.requests, message="deepgram and cartesia")
        serve.wait_for(lambda: openai.audio_requests("transcriptions") and len(openai.audio_requests("speech")) >= 2,
                       message="openai's STT and TTS")
        serve.wait_for(lambda: realtime.handshakes, message="the realtime websocket")
        serve.wait_for(lambda: {f"Bearer {key('LLM_KEY')}", f"Bearer {key('PLUGIN_KEY')}"}
                       <= {r.headers["Authorization"] for r in openai.chat_requests}, message="both LLMs")
        assert serve.stop() == 0
    assert {r.headers["Authorization"] for r in deepgram.requests} == {f"Token {key('DEEPGRAM_KEY')}"}
    assert {r.headers["X-API-Key"] for r in cartesia.requests} == {key("CARTESIA_KEY")}
    assert {r.headers["Authorization"] for r in openai.audio_requests("transcriptions")} == {
        f"Bearer {key('OPENAI_STT_KEY')}"}
    assert {r.headers["Authorization"] for r in openai.audio_requests("speech")} == {
        f"Bearer {key('OPENAI_TTS_KEY')}"}
    assert realtime.handshakes[0]["headers"]["Authorization"] == f"Bearer {key('REALTIME_KEY')}"
    # what the STT heard is the turn the LLM answered
    heard = {r["messages"][-1]["content"] for r in openai.chat_requests if r["messages"][-1].get("role") == "user"}
    assert {deepgram.transcript, openai.transcript} <= heard


def test_published_specs_are_private_while_serving_and_removed_on_exit(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You answer.
pipeline:
  llm: {{provider: openai, base_url: "{fake_openai.base_url}", api_key: "${{LLM_KEY}}"}}
  text_only: true
""")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with Serve(agents, env={**KEYS, "TMPDIR": str(tmp)}) as serve:
        serve.wait_ready()
        state = [p for p in tmp.glob("voice-runtime-*") if (p / "agents").is_dir()]
        assert len(state) == 1
        published = list(state[0].rglob("*"))
        # the spec (with its real key), the plugin files serve accepted for its jobs, and
        # where they borrow serve's MCP connections (the socket is here if the path is short enough),
        # and where they spool their call reports
        assert {p.name for p in published} - {"mcp.sock"} == {"agents", "desk.json", "plugins.json", "gateway.json",
                                                              "report-spool"}
        for path in [state[0], *published]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode)}"
            assert path.stat().st_uid == os.getuid()
        assert key("LLM_KEY") in (state[0] / "agents" / "desk.json").read_text()  # what the job needs
        assert serve.stop() == 0
    assert not state[0].exists()


def test_simulated_speech_without_an_stt_key_is_refused_in_our_words(tmp_path: Path, fakes: dict[str, object]) -> None:
    """`"speech": true` for a pipeline whose Deepgram STT has no key: the report says
    which provider and which variable, as `check` does, with no SDK traceback in the log."""
    openai, deepgram, cartesia = fakes["openai"], fakes["deepgram"], fakes["cartesia"]
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You answer.
pipeline:
  stt: {{provider: deepgram, base_url: "{deepgram.root_url}/v1/listen"}}
  llm: {{provider: openai, base_url: "{openai.base_url}", api_key: sk-test}}
  tts: {{provider: cartesia, voice: v1, base_url: "{cartesia.root_url}", api_key: ca-test}}
""")
    with Serve(agents, env={"DEEPGRAM_API_KEY": None}) as serve:
        serve.wait_ready()
        code, report = serve.post("/simulate?wait=1", json.dumps(
            {"agent": "desk", "turns": ["hello"], "speech": True}).encode(), timeout=90)
        assert code == 502, report
        assert report["ok"] is False
        assert report["error"] == "desk: pipeline.stt (deepgram) has no API key: set DEEPGRAM_API_KEY or api_key:"
        serve.stop()
        assert "Traceback" not in serve.output()
    assert not deepgram.requests
