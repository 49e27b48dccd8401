"""`voice-runtime console`: livekit's own local console, driving one spec's agent."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec

# Set before livekit's console starts its job: console runs jobs in threads of
# this process, so the entrypoint reads the chosen spec from here.
_CHOSEN: dict[str, Any] = {}


async def _entrypoint(ctx: Any) -> None:
    from .runner import SessionRunner

    runner = SessionRunner(_CHOSEN["loaded"], _CHOSEN["plugins"], text_only=_CHOSEN["text"])
    ctx.add_shutdown_callback(runner.aclose)
    await runner.start(room=ctx.room)


def run_console(loaded: LoadedSpec, plugins: Plugins, *, text: bool) -> int:
    try:
        import sounddevice  # noqa: F401 - livekit's console imports it even in text mode
    except OSError as exc:
        print(
            f"error: the console needs the PortAudio library ({exc}).\n"
            "  Debian/Ubuntu: apt-get install libportaudio2    macOS: brew install portaudio",
            file=sys.stderr,
        )
        return 1
    from livekit.agents import AgentServer, cli

    from .providers import import_livekit_plugins

    import_livekit_plugins()
    _CHOSEN.update(loaded=loaded, plugins=plugins, text=text)
    server = AgentServer()
    server.rtc_session(_entrypoint, agent_name=loaded.name)
    argv = sys.argv
    sys.argv = [f"voice-runtime console {loaded.name}", "console", *(["--text"] if text else [])]
    try:
        cli.run_app(server)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = argv
    return 0
