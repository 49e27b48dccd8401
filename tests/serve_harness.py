"""Run `voice-runtime serve` as a real subprocess and talk to its operator port.

Jobs are simulated (``--simulate``: POST /simulate starts a livekit fake job that
runs text turns), so no LiveKit server is needed; the LLM is tests/fakes'
FakeOpenAI, whose recorded requests show which instructions each job used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from helpers import CLI, child_env, write
from mcp_servers.harness import free_port


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
    """Signal a serve process; its whole process group is killed if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def spec(instructions: str, base_url: str, *, name: str | None = None, extra: str = "") -> str:
    return (
        "apiVersion: voice-runtime/v1\n"
        + (f"name: {name}\n" if name else "")
        + f"instructions: {json.dumps(instructions)}\n"
        "pipeline:\n"
        f"  llm: {{provider: openai, model: gpt-4o-mini, base_url: {json.dumps(base_url)}, api_key: sk-test}}\n"
        "  text_only: true\n" + extra
    )


# a plugin whose tool build.version says which version of its code runs (format `version`)
VERSION_PLUGIN = '''
import voice_runtime


def _tool():
    from livekit.agents import function_tool

    @function_tool
    async def code_version() -> str:
        """Which version of the plugin code is running."""
        return "plugin code {version}"

    return code_version


@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("build.version", _tool, description="the plugin code version")
'''


class Serve:
    def __init__(self, agents: Path, *args: str, env: Mapping[str, str | None] | None = None,
                 unregistered: bool = True, cli: list[str] | None = None, log_dir: Path | None = None) -> None:
        """``cli``: another installed ``voice-runtime`` (a wheel in a virtualenv);
        ``log_dir``: where serve's output goes (default: beside ``agents``)."""
        self.agents = agents
        self._cli = cli or CLI
        self._log_dir = log_dir or agents.parent
        self._args = [*(["--unregistered"] if unregistered else []), *args]
        self._env = env
        self._output_from = 0  # where output() starts: a test's turn on a shared serve reads from its own start
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        self.log = self._log_dir / f"serve-{self.port}.log"
        base = ["--http-port", str(self.port), "--http-host", "127.0.0.1", "--simulate", "--idle-processes", "0"]
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*self._cli, "serve", str(self.agents), *base, *self._args], stdout=self._log_file, stderr=subprocess.STDOUT,
            env=child_env(self._env), start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        return json.loads(body)

    def metric(self, name: str) -> float | None:
        _, body = self.get("/metrics")
        for line in body.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def simulate(self, agent: str, turns: list[str], gap_s: float = 0.0) -> dict[str, Any]:
        data = json.dumps({"agent": agent, "turns": turns, "gap_s": gap_s}).encode()
        req = urllib.request.Request(self.url("/simulate"), data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes, *, host: str = "127.0.0.1", timeout: float = 30.0) -> tuple[int, Any]:
        """POST raw bytes; the status and the decoded JSON answer, errors included."""
        req = urllib.request.Request(f"http://{host}:{self.port}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_for(self, what: Callable[[], Any], timeout: float = 30.0, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and "address already in use" in self.output():
                self._log_file.close()  # the free port was taken meanwhile by another process
                self._start()
                continue
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = what()
            except (OSError, AssertionError, ValueError):
                last = None
            if last:
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {message or what}; last={last!r}\n{self.output()[-4000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.get("/readyz")[0] == 200, timeout, "/readyz")

    def agent(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.status()["agents"] if a["name"] == name), None)

    def wait_agent(self, name: str) -> dict[str, Any]:
        """Once ``name`` (its file just written) is served and ready: its /status entry."""
        return self.wait_for(lambda: (a := self.agent(name)) and a["ready"] and a, message=f"agent {name} ready")

    def names(self) -> list[str]:
        return sorted(a["name"] for a in self.status()["agents"])

    def output(self) -> str:
        """What serve logged (on a shared serve: since the current test began)."""
        return self.whole_output()[self._output_from:]

    def whole_output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    @contextlib.contextmanager
    def turn(self) -> Iterator[Serve]:
        """One test's turn on a serve its module shares: output() starts here, and on exit
        whatever the test added to the specs folder is removed and the serve is back to
        the agents it had (a reload with no error) before the next test begins, so a test
        sees neither another's agents nor its log."""
        kept = set(os.listdir(self.agents))
        names = self.names()
        self._output_from = len(self.whole_output())
        try:
            yield self
        finally:
            for entry in set(os.listdir(self.agents)) - kept:
                path = self.agents / entry
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            self.wait_for(lambda: self.names() == names and not self.status()["last_reload"]["errors"],
                          message=f"the serve back to {names} after the test")
            self._output_from = 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        stop_process(self.proc, sig, timeout)
        self._log_file.close()
        return self.proc.returncode

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if not self._log_file.closed:
            self._log_file.close()


RESIDENT = "resident"  # the agent a shared serve keeps throughout: a running serve never drops to none


def shared_serve(root: Path, llm_url: str, *args: str, plugins: Mapping[str, str] | None = None,
                 env: Mapping[str, str | None] | None = None, unregistered: bool = True) -> Iterator[Serve]:
    """One serve for the tests of a module (options ``args``, ``plugins``: files of its
    plugins folder, ``env`` and ``unregistered`` as for ``Serve``), serving the resident
    agent; its TMPDIR is its own, so its state
    folder is the only one there. Starting serve costs ~3 CPU-s, and its job processes'
    forkserver as much again: tests that differ only in the agents they add share one,
    each in a ``turn()``. It must exit 0 at the end: every test's calls ended."""
    write(root / "agents.d" / f"{RESIDENT}.yaml", spec("You are the resident agent.", llm_url))
    for name, code in (plugins or {}).items():
        write(root / "plugins" / name, code)
    (root / "tmp").mkdir()
    with Serve(root / "agents.d", *args, env={**(env or {}), "TMPDIR": str(root / "tmp")},
               unregistered=unregistered) as serve:
        serve.wait_ready()
        yield serve
        assert serve.stop() == 0, serve.whole_output()[-4000:]


def system_prompts_for(fake: Any, user_text: str) -> list[str]:
    """The system prompt of every LLM request whose last user message is ``user_text``."""
    out = []
    for request in fake.chat_requests:
        messages = request["messages"]
        users = [m for m in messages if m.get("role") == "user"]
        if users and users[-1].get("content") == user_text:
            out.extend(m["content"] for m in messages if m.get("role") in ("system", "developer"))
    return out
