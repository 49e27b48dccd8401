"""Run `recorder.py` MCP servers from tests and read back what they recorded.

HTTP servers run as real subprocesses on 127.0.0.1, each in its own process group so
`kill()` also reaps any grandchildren (the ``ignore-sigterm`` fault makes one). stdio
servers are not started here: `stdio_command` gives the command line for a spec's
``command:`` / ``args:`` (or `StdioServerParameters`), and the client spawns it.

The start/stop calls block (they poll a port / wait for a pid). That is fine in async
tests as long as the event loop has nothing that must run meanwhile; from a running
agent session, call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

RECORDER: Final[Path] = Path(__file__).resolve().with_name("recorder.py")
HOST: Final = "127.0.0.1"

HttpTransport = Literal["streamable-http", "sse"]
StrPath = str | os.PathLike[str]
Fault = str | Sequence[str] | None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # "State:\tZ (zombie)": orphans are reaped by PID 1 whenever it gets to it.
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def is_zombie(pid: int) -> bool:
    """Whether `pid` exited but was never reaped by its parent (state Z)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def wait_gone(pids: Sequence[int], timeout: float = 5.0) -> bool:
    """Poll until none of `pids` is alive; False if some still are after `timeout`."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _recorder_args(
    transport: str,
    *,
    record: StrPath | None,
    name: str,
    fault: Fault,
    port: int | None = None,
    descriptions: StrPath | None = None,
    extra_tools: StrPath | None = None,
    page_size: int = 0,
    stderr_text: str = "",
    oauth_issuer: str | None = None,
) -> list[str]:
    args = [str(RECORDER), "--transport", transport, "--name", name]
    if port is not None:
        args += ["--port", str(port)]
    if record is not None:
        args += ["--record", os.fspath(record)]
    if descriptions is not None:
        args += ["--descriptions", os.fspath(descriptions)]
    if extra_tools is not None:
        args += ["--extra-tools", os.fspath(extra_tools)]
    if page_size:
        args += ["--page-size", str(page_size)]
    if stderr_text:
        args += ["--stderr-text", stderr_text]
    if oauth_issuer:
        args += ["--oauth-issuer", oauth_issuer]
    faults = [fault] if isinstance(fault, str) else list(fault or ())
    for f in faults:
        args += ["--fault", f]
    return args


def stdio_command(
    record: StrPath | None = None,
    name: str = "recorder",
    fault: Fault = None,
    descriptions: StrPath | None = None,
    extra_tools: StrPath | None = None,
    page_size: int = 0,
    stderr_text: str = "",
) -> tuple[str, list[str]]:
    """``(command, args)`` that runs the recorder over stdio.

    Absolute paths only, because MCP stdio clients start servers with a minimal
    environment (no PYTHONPATH, no virtualenv activation) and any working directory.
    ``descriptions``: a JSON file of tool -> description, read at every (re)start;
    ``extra_tools``: a JSON file of extra tool name -> description, read likewise;
    ``page_size``: tools/list in pages of that many tools; ``stderr_text``: printed to
    stderr at startup.
    """
    return sys.executable, _recorder_args(
        "stdio", record=record, name=name, fault=fault, descriptions=descriptions,
        extra_tools=extra_tools, page_size=page_size, stderr_text=stderr_text,
    )


def _read_jsonl(path: StrPath) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []  # no call and no start yet is a valid state to assert on
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_records(path: StrPath) -> list[dict[str, Any]]:
    """Tool calls, in arrival order: ``{"tool", "args", "pid", "ts"}`` each."""
    return [r for r in _read_jsonl(path) if "tool" in r]


def read_events(path: StrPath) -> list[dict[str, Any]]:
    """Process events, in order: one ``{"event": "spawn", "name", "transport", "port",
    "faults", "pid", "ts"}`` per server start (plus ``grandchild_pid`` with ignore-sigterm)."""
    return [r for r in _read_jsonl(path) if "event" in r]


def read_requests(path: StrPath) -> list[dict[str, Any]]:
    """The HTTP recorder's POSTs, in order: ``{"authorization", "query"}`` each."""
    return [r["request"] for r in _read_jsonl(path) if "request" in r]


def read_cancellations(path: StrPath) -> list[dict[str, Any]]:
    """``sleep`` calls the client cancelled, as the server saw them: ``{"cancelled":
    "sleep", "args", "pid", "ts"}`` each."""
    return [r for r in _read_jsonl(path) if "cancelled" in r]


def read_answers(path: StrPath) -> list[dict[str, Any]]:
    """What asks.py's questions got back, in order: ``{"asked": tool, "action",
    "content"}`` or ``{"asked": tool, "error"}`` each (pid and ts left out)."""
    return [{k: v for k, v in r.items() if k not in ("pid", "ts")} for r in _read_jsonl(path) if "asked" in r]


class HttpServer:
    """One recorder served over HTTP by a subprocess; `restart()` keeps the port."""

    def __init__(
        self,
        transport: HttpTransport = "streamable-http",
        *,
        record: StrPath | None = None,
        name: str = "recorder",
        fault: Fault = None,
        port: int | None = None,
        startup_timeout: float = 15.0,
        descriptions: StrPath | None = None,
        extra_tools: StrPath | None = None,
        page_size: int = 0,
        oauth_issuer: str | None = None,
    ) -> None:
        if transport not in ("streamable-http", "sse"):
            raise ValueError(f"not an HTTP transport: {transport!r}")
        self.transport: HttpTransport = transport
        self.record = Path(record) if record is not None else None
        self.name = name
        self.fault = fault
        self.descriptions = descriptions
        self.extra_tools = extra_tools
        self.page_size = page_size
        self.oauth_issuer = oauth_issuer
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        fd, stderr_path = tempfile.mkstemp(prefix=f"mcp-{name}-", suffix=".stderr")
        os.close(fd)
        # A file, not a pipe: nobody would drain a pipe, and stderr-flood would block.
        self.stderr_path = Path(stderr_path)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        path = "/sse" if self.transport == "sse" else "/mcp"
        return f"http://{HOST}:{self.port}{path}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last process (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.poll()

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def start(self) -> Self:
        """Spawn the server and wait until its port accepts connections."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        args = _recorder_args(
            self.transport, record=self.record, name=self.name, fault=self.fault, port=self.port,
            descriptions=self.descriptions, extra_tools=self.extra_tools, page_size=self.page_size,
            oauth_issuer=self.oauth_issuer,
        )
        with self.stderr_path.open("ab") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # Own group: kill() can take grandchildren without hitting pytest.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._proc.returncode} before listening on "
                    f"{self.port}:\n{self.stderr_text()[-4000:]}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not listen on {self.port} within {self.startup_timeout} s:\n"
                    f"{self.stderr_text()[-4000:]}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the server to exit on its own (e.g. after `crash`); its exit code."""
        if self._proc is None:
            raise RuntimeError("server was never started")
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the whole process group."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(proc)

    def kill(self) -> None:
        """SIGKILL the server and everything in its process group, now."""
        if self._proc is not None:
            self._kill_group(self._proc)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        # start_new_session made the server its group's leader, so pgid == pid; the
        # group outlives the leader while a grandchild remains, so this also sweeps
        # up after a server that exited on its own.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, timeout: float = 5.0) -> Self:
        """`stop()` then `start()` on the same port; the pid changes."""
        self.stop(timeout)
        return self.start()

    def close(self) -> None:
        """Stop and delete the stderr log."""
        self.stop()
        self.stderr_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running and self._proc else "stopped"
        return f"HttpServer({self.name!r}, {self.url}, {state})"


def start_http_server(
    transport: HttpTransport = "streamable-http",
    *,
    record: StrPath | None = None,
    name: str = "recorder",
    fault: Fault = None,
    port: int | None = None,
    startup_timeout: float = 15.0,
    descriptions: StrPath | None = None,
    extra_tools: StrPath | None = None,
    page_size: int = 0,
) -> HttpServer:
    """Start a recorder over HTTP on a free (or the given) port; it is already listening."""
    return HttpServer(
        transport, record=record, name=name, fault=fault, port=port, startup_timeout=startup_timeout,
        descriptions=descriptions, extra_tools=extra_tools, page_size=page_size,
    ).start()
