"""`voice-runtime chat`: talk to one agent in text, or speak to it from WAV files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..core.terminal import printable
from .common import (AgentOpt, AgentsDir, PluginsOpt, VerboseOpt, guard_output, load_plugins, pick_agent, plugin_output,
                     refuse_missing_keys, session_logging, usage_error)
from .option_choices import LogLevel

if TYPE_CHECKING:
    from ..spec.loader import LoadedSpec


def chat(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON event per line: user, tool_call, tool_result, reply, error, warning, filler, fallback, handoff, handoff_refused, unbacked_claim, claims_judged, phone; the call report last (report).")] = False,
    log_level: Annotated[Optional[LogLevel], typer.Option("--log-level", case_sensitive=False,
                                                          help="Log level on stderr, for every library "
                                                          "(default: voice-runtime's warnings only).")] = None,
    verbose: VerboseOpt = False,
    audio_in: Annotated[Optional[list[Path]], typer.Option(
        "--audio-in", metavar="WAV", help="Speak to the agent from a WAV file (16-bit PCM, mono or stereo, 8-48 kHz): "
        "its pauses of 1 s or more separate turns; repeat the option for more files.")] = None,
    audio_out: Annotated[Optional[Path], typer.Option(
        "--audio-out", metavar="WAV", help="With --audio-in: write the call as the caller heard it (WAV, 24 kHz mono).")] = None,
    context: Annotated[Optional[list[str]], typer.Option(
        "--context", metavar="NAME=VALUE", help="A call context value the spec declares (its `context:`), as a "
        "LiveKit call would carry it; repeat for more.")] = None,
) -> None:
    """Talk to an agent: no LiveKit server. Tool calls show inline.

    Reads lines from stdin when it is not a terminal:
    echo "what time is it?" | voice-runtime chat agents.d/ --agent concierge

    With --audio-in the caller speaks from WAV files, through the agent's real VAD,
    STT and TTS: voice-runtime chat agents.d/ --agent concierge --audio-in q.wav --audio-out a.wav
    """
    import asyncio

    secrets = guard_output()  # before chat is imported: its printer's default stream is sys.stdout
    from ..session.runner import SessionRunner
    from ..session.chat import ChatPrinter, run_audio_chat, run_chat
    from ..spec.handoffs import reachable

    if audio_out is not None and not audio_in:
        usage_error("--audio-out needs --audio-in")
    turns = _audio_turns(audio_in or [], audio_out)  # bad audio: exit 2 before anything starts
    session_logging(log_level, verbose, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    every: list[LoadedSpec] = []
    loaded = pick_agent(agents_dir, loaded_plugins, agent, secrets, every)
    by_name = {s.name: s for s in every}
    if turns and (loaded.spec.pipeline is None or loaded.spec.pipeline.text_only) and loaded.spec.realtime is None:
        usage_error(f"agent {loaded.name} is text-only: --audio-in needs a voice pipeline or a realtime model")
    refuse_missing_keys(loaded, loaded_plugins, text_only=not turns)
    values = _call_context(loaded, context or [], secrets)
    if turns:
        from ..session.audio_io import caller_audio, speaker_audio

        printer = ChatPrinter(loaded.name, as_json=json_lines, out=sys.stdout)
        runner = SessionRunner(loaded, loaded_plugins, audio_in=caller_audio(), audio_out=speaker_audio(),
                               specs=reachable(loaded, by_name.get), call_context=values)
        with plugin_output():
            raise typer.Exit(asyncio.run(run_audio_chat(runner, printer, turns, audio_out)))
    printer = ChatPrinter(loaded.name, as_json=json_lines, out=sys.stdout, echo_user=not sys.stdin.isatty())
    runner = SessionRunner(loaded, loaded_plugins, text_only=True, specs=reachable(loaded, by_name.get),
                           call_context=values)
    with plugin_output():  # plugin tools run during the session; the printer keeps stdout
        raise typer.Exit(asyncio.run(run_chat(runner, printer)))


def _call_context(loaded: LoadedSpec, pairs: list[str], secrets: Any) -> dict[str, str]:
    """``--context NAME=VALUE`` options, checked as a call's context is (exit 2 when
    the call would be refused); secret values join the output's redaction."""
    from ..spec.call_context import ContextRefused, for_call, local_values, secret_values

    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            usage_error(f"--context {printable(pair)!r}: use NAME=VALUE")
        given[name] = value
    declared = loaded.spec.context
    secrets.add(secret_values(declared, {k: v for k, v in given.items() if k in declared}))
    try:
        values = local_values(declared, given)
        for_call(loaded, values)  # a value that cannot go into a header is refused now, not as a traceback
        return values
    except ContextRefused as exc:
        usage_error(f"agent {loaded.name} refuses the call: {exc}")


def _audio_turns(paths: list[Path], audio_out: Path | None) -> list[Any]:
    """The caller's turns from ``--audio-in`` files; a file that is not usable audio
    is a one-line error and exit 2."""
    from ..session.audio_io import AudioFileError, read_wav, speech_turns

    turns = []
    for path in paths:
        try:
            pcm = read_wav(path)
        except AudioFileError as exc:
            usage_error(printable(str(exc)))
        found = speech_turns(pcm)
        if not found:
            usage_error(printable(f"{path}: no speech in the file (only silence)"))
        turns += found
    if audio_out is not None and not audio_out.parent.is_dir():
        usage_error(printable(f"{audio_out}: cannot write there: {audio_out.parent} is not a folder"))
    return turns


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
