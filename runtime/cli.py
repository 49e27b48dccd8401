"""The `voice-runtime` entry point (``[project.scripts]`` names ``main``); the commands
live in ``voice_runtime.commands``, one module each, registered on ``commands.app.app``."""

from __future__ import annotations

import sys

from .commands.app import app as app


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        _leave_plugin_threads(exc)
        raise


def _leave_plugin_threads(exc: SystemExit) -> None:
    """A one-shot command is done, but Python joins every non-daemon thread before
    exiting: one a plugin started at import kept `check` running forever after its
    report. Flush the output and leave at once (serve and console end their own way)."""
    import threading

    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "console"):
        return
    if not any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        return
    from .core.leave import leave_now

    if exc.code is not None and not isinstance(exc.code, int):
        print(exc.code, file=sys.stderr)
    leave_now(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)


if __name__ == "__main__":
    main()
