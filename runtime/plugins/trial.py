"""Running one plugin file (``exec_plugin``), and the child process that tries
plugin files before anyone imports them for real (``python -m
voice_runtime.plugins.trial``; see ``manager.trial_import``). Only the standard
library is imported here: the trial's cost is python's start plus the plugins.

It reads ``{"timeout": s, "files": [[path, base64 bytes], ...]}`` on stdin, imports
the files in order as ``make_plugin_manager`` would, and writes one JSON line per
event on its own copy of stdout: ``{"start": i}``, ``{"done": i, "error": ...}``,
and, when it cannot go on, ``{"hang": true, "file": i, "line": n}`` (a file still
importing after the timeout) or ``{"exit": true, "file": i, "code": c, "line": n}``
(a file calling ``os._exit``). A file that ends the process any other way is the
one that started and never finished. The parent kills the whole process group
afterwards, so threads and processes a plugin started end with it.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from ..spec.errors import SpecError


def exec_plugin(path: Path, source: bytes, *, interrupt_is_failure: bool = True) -> ModuleType | SpecError:
    """Execute a plugin file's bytes as a fresh module (never reusing an old one, so
    new job processes always see the file as it was accepted). ``__file__`` and
    tracebacks name the file itself. Import errors become a SpecError at the line
    in that file where they happened.

    ``interrupt_is_failure``: a KeyboardInterrupt is the plugin's doing (in a trial
    process, or a thread no signal reaches); on the main thread of a CLI command it
    may be the user's Ctrl-C, which must still stop the command."""
    name = f"voice_runtime_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    # Registered in sys.modules while it runs: pydantic and dataclasses look their
    # module up there to resolve annotations.
    sys.modules[name] = module
    try:
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - it is a plugin
    except SyntaxError as exc:
        _restore(name, previous)
        return SpecError(str(path), exc.lineno or 1, exc.offset or 1, message=f"plugin has a syntax error: {exc.msg}")
    except BaseException as exc:  # SystemExit from a plugin is still just a broken plugin
        if isinstance(exc, KeyboardInterrupt) and not interrupt_is_failure:
            raise
        _restore(name, previous)
        return SpecError(str(path), _line_in(path, exc.__traceback__), 1,
                         message=f"plugin failed to import: {exception_summary(exc)}")
    return module


def _line_in(path: Path, tb: Any) -> int:
    """The innermost line of ``path`` in a traceback (1 if it is not there)."""
    line = 1
    for frame in traceback.extract_tb(tb):
        if frame.filename == str(path):
            line = frame.lineno or 1
    return line


def _restore(name: str, previous: ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous


def exception_summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    files = [(Path(p), base64.b64decode(s)) for p, s in request["files"]]
    names = {str(p): i for i, (p, _) in enumerate(files)}
    timeout = float(request["timeout"])
    # the protocol gets a private descriptor; what plugins print goes nowhere (a
    # plugin flooding stdout or stderr must not fill a pipe and look like a hang)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    lock = threading.Lock()
    main_thread = threading.main_thread().ident
    real_exit = os._exit

    def send(message: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(message) + "\n")
            out.flush()

    def where(frame: FrameType | None) -> tuple[int | None, int]:
        """(index of the plugin file, line) of the innermost frame in a plugin file."""
        while frame is not None:
            index = names.get(frame.f_code.co_filename)
            if index is not None:
                return index, frame.f_lineno
            frame = frame.f_back
        return None, 1

    def reporting_exit(code: int) -> None:
        index, line = where(sys._getframe(1))
        send({"exit": True, "file": index, "code": code, "line": line})
        real_exit(code)

    os._exit = reporting_exit  # type: ignore[assignment]
    for i, (path, source) in enumerate(files):
        send({"start": i})

        def hung(index: int = i) -> None:
            _, line = where(sys._current_frames().get(main_thread))  # type: ignore[arg-type]
            send({"hang": True, "file": index, "line": line})
            real_exit(0)

        watchdog = threading.Timer(timeout, hung)
        watchdog.daemon = True
        watchdog.start()
        result = exec_plugin(path, source, interrupt_is_failure=True)
        watchdog.cancel()
        send({"done": i, "error": None if isinstance(result, ModuleType) else result.as_dict()})
    real_exit(0)  # never wait for threads a plugin started, nor run its atexit handlers


if __name__ == "__main__":
    main()
