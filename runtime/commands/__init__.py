"""The command line: one module per ``voice-runtime`` command, each registering itself on
the one typer app (``app``); ``voice_runtime.cli`` is only the entry point.

May import: every other package, inside the command's body so a light command never
loads livekit (tests/e2e/test_cli_imports.py). Commands never import each other: what two
commands share lives in a lower package or in ``commands.common``.
"""
