"""The `voice-runtime` command line (typer).

Each command imports what it needs inside its body: `check` and `schema` must not
pay livekit's import cost.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
import typer.core

from . import __version__
from .choices import LogFormat, LogLevel, OutputFormat
from .serve.options import Dispatch, Executor
from .terminal import printable

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .plugins import Plugins
    from .secrets import SecretSet
    from .spec.loader import LoadedSpec
    from .toolbox import Toolbox

EXAMPLES = """\b
Examples:
  voice-runtime serve agents.d/                  every spec a LiveKit agent, reloaded on change
  voice-runtime check agents.d/                  validate every spec, print what will run
  voice-runtime check agents.d/ --format json    the same, for scripts and CI
  voice-runtime schema -o agents.d/agent.schema.json
  voice-runtime plugins                          loaded plugins and what they registered
  echo "what time is it?" | voice-runtime chat agents.d/ --agent support
  voice-runtime console agents.d/ --agent concierge --text
  voice-runtime tools agents.d/ --agent support  the tools the model sees, and from where
  voice-runtime call agents.d/ --agent support get_current_time --args '{"timezone": "UTC"}'
  voice-runtime test agents.d/ --junit results.xml   conversation tests in agents.d/tests/
"""

class _UsageCommand(typer.core.TyperCommand):
    """A command whose usage line names its arguments as click does (``AGENTS_DIR``,
    ``[TOOL]`` when optional): this typer writes a required one as ``{agents_dir}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces += param.get_usage_pieces(ctx)
                continue
            name = param.metavar or (param.name or "").upper()
            pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        return pieces


class _App(typer.Typer):
    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _UsageCommand, **kwargs)


app = _App(
    name="voice-runtime",
    help="Run LiveKit voice agents with MCP tools from a folder of YAML specs.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

AgentsDir = Annotated[Path, typer.Argument(metavar="AGENTS_DIR", help="Folder of agent specs (*.yaml).",
                                                  show_default=False)]
PluginsOpt = Annotated[
    Optional[Path],
    typer.Option("--plugins", help="Folder of plugin files. Default: plugins/ beside the specs folder."),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Output for people (text) or scripts (json).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voice-runtime {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run LiveKit voice agents with MCP tools from a folder of YAML specs."""


def plugins_dir_for(agents_dir: Path | None, option: Path | None) -> Path:
    if option is not None:
        return option
    if agents_dir is not None:
        return agents_dir.resolve().parent / "plugins"
    return Path("plugins")


def require_dir(agents_dir: Path) -> None:
    """A specs folder that does not exist is a usage error (exit 2), for every command."""
    if not agents_dir.is_dir():
        why = "not a directory (give the folder that holds the *.yaml specs)" if agents_dir.exists() else "no such directory"
        typer.echo(f"error: {agents_dir}: {why}", err=True)
        raise typer.Exit(2)


def load_plugins(agents_dir: Path | None, option: Path | None) -> Plugins:
    from .plugins import make_plugin_manager

    return make_plugin_manager(plugins_dir_for(agents_dir, option))


@app.command()
def check(
    agents_dir: AgentsDir,
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
    offline: Annotated[bool, typer.Option("--offline", help="Do not connect to the MCP servers.")] = False,
) -> None:
    """Validate every spec, connect to every MCP server, and print what will run,
    or every error as file:line:col.

    Exit code: 0 valid (an unreachable optional MCP server or a provider without an
    API key is a warning), 1 invalid or a required MCP server unreachable, 2 usage
    error (no such folder, bad option).
    """
    import asyncio

    from .check import probe_servers, render_json, render_text, run_check

    require_dir(agents_dir)
    secrets = _guard_output()
    report = run_check(agents_dir, load_plugins(agents_dir, plugins))
    secrets.add_specs(report.specs)
    if not report.errors and not offline:
        _quiet_logging(LogLevel.error, secrets)  # the report says what failed; the SDK's own logs would repeat it
        report.servers = asyncio.run(probe_servers(report))
    typer.echo(render_json(report) if format is OutputFormat.json else render_text(report))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    plugins: PluginsOpt = None,
) -> None:
    """Print the JSON Schema of a spec (built-in and plugin providers included)."""
    from .spec.schema import schema_json

    text = schema_json(load_plugins(None, plugins).registry)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@app.command("plugins")
def plugins_cmd(
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """List loaded plugins, where each came from, and what it registered."""
    loaded = load_plugins(None, plugins)
    registry = loaded.registry
    rows = [
        {
            "name": info.name,
            "origin": info.origin,
            "source": info.source,
            "registered": registry.contributions.get(info.name, []),
        }
        for info in loaded.loaded
    ]
    problems = [str(e) for e in loaded.errors] + [str(p) for p in registry.problems]
    if format is OutputFormat.json:
        typer.echo(json.dumps({"plugins": rows, "disabled": loaded.disabled, "errors": problems}, indent=2))
    else:
        from .check import table

        typer.echo(table(["PLUGIN", "FROM", "REGISTERED", "SOURCE"], [
            [r["name"], r["origin"], ", ".join(r["registered"]) or "-", r["source"]] for r in rows
        ]))
        for name in loaded.disabled:
            typer.echo(f"disabled: {name}")
        for problem in problems:
            typer.echo(f"error: {problem}")
    raise typer.Exit(1 if problems else 0)


def _guard_output() -> SecretSet:
    """This command's secrets, and a stdout and stderr that redact them: every line
    it prints (reports, errors, log lines, tracebacks, warnings) passes through."""
    from .secrets import RedactingStream, SecretSet, environment_credentials

    secrets = SecretSet(environment_credentials())
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout, secrets)
        sys.stderr = RedactingStream(sys.stderr, secrets)
    return secrets


def _pick_agent(agents_dir: Path, plugins: Plugins, agent: str, secrets: SecretSet,
                every: list[LoadedSpec] | None = None) -> LoadedSpec:
    """The named agent's accepted spec, or exit with its errors (1) or the list of names (2).
    ``every``: filled with every accepted spec of the folder (handoff targets)."""
    from .spec.loader import load_folder

    require_dir(agents_dir)

    result = load_folder(agents_dir, plugins)
    secrets.add_specs(result.specs)
    if every is not None:
        every.extend(result.specs)
    for loaded in result.specs:
        if loaded.name == agent:
            return loaded
    own = [e for e in result.errors if Path(e.file).stem == agent or f"{agent!r}" in e.message]
    if own or (result.errors and not result.specs):
        for error in own or result.errors:
            typer.echo(printable(str(error)), err=True)
        raise typer.Exit(1)
    names = ", ".join(s.name for s in result.specs) or "none"
    typer.echo(printable(f"error: no agent named {agent!r} in {agents_dir}; available: {names}"), err=True)
    raise typer.Exit(2)


def _quiet_logging(level: LogLevel, secrets: SecretSet) -> None:
    from .logs import setup_logging

    setup_logging("short", level.value, secrets)


AgentOpt = Annotated[str, typer.Option("--agent", "-a", help="Agent name (see `check`).")]
LogLevelOpt = Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log level on stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also show the libraries' warnings "
                                          "(livekit, openai, mcp), tracebacks included.")]


def _ours_only(record: logging.LogRecord) -> bool:
    # a record the conversation shows as an event (build.SHOWN_AS_EVENT) is not said twice
    return record.name.startswith("voice_runtime") and not getattr(record, "session_event", False)


def _session_logging(log_level: LogLevel | None, verbose: bool, secrets: SecretSet) -> None:
    """By default a conversation shows voice-runtime's own one-line warnings and
    errors: an unreachable LLM made livekit log about 20 retry warnings and two
    tracebacks before our sentence. ``-v`` adds the libraries' warnings;
    ``--log-level`` shows everything from that level on."""
    _quiet_logging(log_level or LogLevel.warning, secrets)
    if log_level is None and not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_ours_only)


def _refuse_missing_keys(loaded: LoadedSpec, plugins: Plugins, *, text_only: bool) -> None:
    """A provider this session builds has no API key: say which, and the variable
    to set, before anything starts (exit 2), not seconds in, in the SDK's words."""
    from .check import missing_api_keys

    missing = missing_api_keys(loaded, plugins.registry, text_only=text_only)
    for sentence in missing:
        typer.echo(f"error: {loaded.name}: {sentence}", err=True)
    if missing:
        raise typer.Exit(2)


@app.command()
def chat(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON event per line (user, tool_call, tool_result, reply, error).")] = False,
    log_level: Annotated[Optional[LogLevel], typer.Option("--log-level", case_sensitive=False,
                                                          help="Log level on stderr, for every library "
                                                          "(default: voice-runtime's warnings only).")] = None,
    verbose: VerboseOpt = False,
    audio_in: Annotated[Optional[list[Path]], typer.Option(
        "--audio-in", metavar="WAV", help="Speak to the agent from a WAV file (16-bit PCM, mono or stereo, 8-48 kHz): "
        "its pauses of 1 s or more separate turns; repeat the option for more files.")] = None,
    audio_out: Annotated[Optional[Path], typer.Option(
        "--audio-out", metavar="WAV", help="With --audio-in: write the call as the caller heard it (WAV, 24 kHz mono).")] = None,
) -> None:
    """Talk to an agent: no LiveKit server. Tool calls show inline.

    Reads lines from stdin when it is not a terminal:
    echo "what time is it?" | voice-runtime chat agents.d/ --agent concierge

    With --audio-in the caller speaks from WAV files, through the agent's real VAD,
    STT and TTS: voice-runtime chat agents.d/ --agent concierge --audio-in q.wav --audio-out a.wav
    """
    import asyncio

    secrets = _guard_output()  # before chat is imported: its printer's default stream is sys.stdout
    from .build import SessionRunner
    from .chat import ChatPrinter, run_audio_chat, run_chat
    from .handoffs import reachable

    if audio_out is not None and not audio_in:
        _usage_error("--audio-out needs --audio-in")
    turns = _audio_turns(audio_in or [], audio_out)  # bad audio: exit 2 before anything starts
    _session_logging(log_level, verbose, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    every: list[LoadedSpec] = []
    loaded = _pick_agent(agents_dir, loaded_plugins, agent, secrets, every)
    by_name = {s.name: s for s in every}
    if turns and (loaded.spec.pipeline is None or loaded.spec.pipeline.text_only) and loaded.spec.realtime is None:
        _usage_error(f"agent {loaded.name} is text-only: --audio-in needs a voice pipeline or a realtime model")
    _refuse_missing_keys(loaded, loaded_plugins, text_only=not turns)
    if turns:
        from .audio_io import caller_audio, speaker_audio

        printer = ChatPrinter(loaded.name, as_json=json_lines, out=sys.stdout)
        runner = SessionRunner(loaded, loaded_plugins, audio_in=caller_audio(), audio_out=speaker_audio(),
                               specs=reachable(loaded, by_name.get))
        with plugin_output():
            raise typer.Exit(asyncio.run(run_audio_chat(runner, printer, turns, audio_out)))
    printer = ChatPrinter(loaded.name, as_json=json_lines, out=sys.stdout, echo_user=not sys.stdin.isatty())
    runner = SessionRunner(loaded, loaded_plugins, text_only=True, specs=reachable(loaded, by_name.get))
    with plugin_output():  # plugin tools run during the session; the printer keeps stdout
        raise typer.Exit(asyncio.run(run_chat(runner, printer)))


@app.command("test")
def test_cmd(
    agents_dir: AgentsDir,
    agent: Annotated[Optional[str], typer.Option("--agent", "-a", help="Only the cases of this agent.")] = None,
    tests: Annotated[Optional[Path], typer.Option("--tests", help="A test file or folder of them. "
                                                   "Default: tests/ inside the specs folder.")] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write the results as JUnit XML here.")] = None,
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
    log_level: Annotated[Optional[LogLevel], typer.Option("--log-level", case_sensitive=False,
                                                          help="Log level on stderr, for every library.")] = None,
) -> None:
    """Run conversation tests (agents.d/tests/*.yaml): one fresh text session per case.

    Exit code: 0 every case passed (skipped ones say why), 1 a case failed, 2 usage
    or an invalid test file (errors as file:line:col).
    """
    import asyncio

    from .spec.loader import load_folder
    from .testing.files import TESTS_FOLDER, find_test_files
    from .testing.report import render_json, render_text, write_junit
    from .testing.suite import run_suite

    require_dir(agents_dir)
    secrets = _guard_output()
    _session_logging(log_level, False, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    folder = load_folder(agents_dir, loaded_plugins)
    secrets.add_specs(folder.specs)
    for error in folder.errors:  # an invalid spec's cases cannot run: say why (their files then name the agent)
        typer.echo(printable(str(error)), err=True)
    specs = {s.name: s for s in folder.specs}
    if agent is not None and agent not in specs:
        typer.echo(printable(f"error: no valid agent named {agent!r} in {agents_dir}; available: "
                             f"{', '.join(sorted(specs)) or 'none'}"), err=True)
        raise typer.Exit(2)
    paths = find_test_files(tests if tests is not None else agents_dir / TESTS_FOLDER)
    if isinstance(paths, list) and not paths:
        typer.echo(f"error: no test files (*.yaml) in {tests or agents_dir / TESTS_FOLDER}", err=True)
        raise typer.Exit(2)
    if not isinstance(paths, list):
        typer.echo(printable(str(paths)), err=True)
        raise typer.Exit(2)
    with plugin_output():
        suite = asyncio.run(run_suite(specs, paths, loaded_plugins, agents=None if agent is None else {agent}))
    if suite.errors:
        for error in suite.errors:
            typer.echo(printable(str(error)), err=True)
        files = {e.file for e in suite.errors}
        typer.echo(f"found {len(suite.errors)} error{'s' if len(suite.errors) != 1 else ''} in {len(files)} "
                   f"test file{'s' if len(files) != 1 else ''}", err=True)
        raise typer.Exit(2)
    typer.echo(render_json(suite.results) if format is OutputFormat.json else render_text(suite.results))
    if junit is not None:
        write_junit(suite.results, junit)
    raise typer.Exit(1 if suite.failed else 0)


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _audio_turns(paths: list[Path], audio_out: Path | None) -> list[Any]:
    """The caller's turns from ``--audio-in`` files; a file that is not usable audio
    is a one-line error and exit 2."""
    from .audio_io import AudioFileError, read_wav, speech_turns

    turns = []
    for path in paths:
        try:
            pcm = read_wav(path)
        except AudioFileError as exc:
            _usage_error(printable(str(exc)))
        found = speech_turns(pcm)
        if not found:
            _usage_error(printable(f"{path}: no speech in the file (only silence)"))
        turns += found
    if audio_out is not None and not audio_out.parent.is_dir():
        _usage_error(printable(f"{audio_out}: cannot write there: {audio_out.parent} is not a folder"))
    return turns


@app.command()
def console(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    text: Annotated[bool, typer.Option("--text", help="Type instead of speaking.")] = False,
) -> None:
    """livekit's local console for one agent: microphone and speaker, or --text."""
    from .console import run_console
    from .secrets import SecretSet

    # livekit's console owns the terminal (and its logging): no stream wrapping here
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = _pick_agent(agents_dir, loaded_plugins, agent, SecretSet())
    _refuse_missing_keys(loaded, loaded_plugins, text_only=text)
    raise typer.Exit(run_console(loaded, loaded_plugins, text=text))


@app.command()
def tools(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
    lock: Annotated[bool, typer.Option("--lock", help="Write <spec>.tools.lock: the tool definitions seen now are "
                                       "the approved ones; a later change withholds the tool.")] = False,
    log_level: Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log level on stderr.")]
    = LogLevel.error,
) -> None:
    """List the tools the agent's model will see and where each comes from.

    Connects to the agent's MCP servers; a server that is down is reported and its
    tools are missing, exactly as in a session.
    """
    import asyncio

    from .toolbox import open_toolbox

    secrets = _guard_output()
    _quiet_logging(log_level, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = _pick_agent(agents_dir, loaded_plugins, agent, secrets)

    async def main() -> Toolbox:
        from .mcp.pool import McpPool

        pool = McpPool(retry_in_background=False)
        try:
            if lock:
                from .mcp.pool import write_tool_lock

                # approve what the servers list now, then show what the model gets with it
                path = write_tool_lock(loaded, (await pool.acquire(loaded)).connections)
                typer.echo(f"wrote {path}", err=True)
            return await open_toolbox(loaded, loaded_plugins, pool)
        finally:
            await pool.aclose()

    with plugin_output():  # plugin tool factories run while the toolbox is built
        box = asyncio.run(main())
    unavailable = box.acquired.unavailable
    from .handoffs import tool_name

    # the model is also shown a transfer tool per handoff (no arguments; the session continues as the agent)
    handoffs = [{"name": tool_name(h.agent), "source": f"handoff:{h.agent}", "original": h.agent,
                 "description": h.when, "parameters": {}} for h in loaded.spec.handoffs]
    if format is OutputFormat.json:
        typer.echo(json.dumps({"agent": loaded.name, "tools": [r.as_dict() for r in box.rows] + handoffs,
                               "withheld": [w.as_dict() for w in box.withheld],
                               "unavailable": unavailable}, indent=2))
    else:
        from .check import table

        typer.echo(table(["TOOL", "FROM", "ORIGINAL NAME", "DESCRIPTION"], [
            [r.name, r.source, r.original, _one_line(r.description, 70)] for r in box.rows
        ] + [[h["name"], h["source"], h["original"], _one_line(h["description"], 70)] for h in handoffs]))
        for line in box.warnings:
            typer.echo(printable(f"withheld: {line}"))
        for server, why in unavailable.items():
            typer.echo(printable(f"warning: MCP server {server} is unreachable: {why}; its tools are missing"),
                       err=True)
    required_down = [s for s in unavailable if loaded.spec.mcp_servers[s].required]
    raise typer.Exit(1 if required_down else 0)


def plugin_output() -> AbstractContextManager[object]:
    from .plugins import plugin_output

    return plugin_output()


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@app.command()
def call(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    tool: Annotated[str, typer.Argument(metavar="TOOL", help="Tool name as the model sees it (see `tools`).",
                                                show_default=False)],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    plugins: PluginsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the call record and result as JSON.")] = False,
    metrics: Annotated[bool, typer.Option("--metrics", help="Then print voice-runtime's Prometheus metrics.")] = False,
) -> None:
    """Call one tool directly, through the same path a session uses, and print its result.

    Exit code: 0 the tool answered, 1 it failed (down, timeout, error), 2 usage
    (unknown agent or tool, arguments that are not a JSON object).
    """
    import asyncio

    from .mcp.toolset import ToolFailure
    from .toolbox import call_row, open_toolbox

    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
    if not isinstance(arguments, dict):
        raise typer.BadParameter("must be a JSON object, e.g. '{\"city\": \"Paris\"}'", param_hint="--args")
    secrets = _guard_output()
    _quiet_logging(LogLevel.error, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = _pick_agent(agents_dir, loaded_plugins, agent, secrets)

    async def main() -> int:
        from .mcp.pool import McpPool

        pool = McpPool(retry_in_background=False)
        try:
            with plugin_output():
                box = await open_toolbox(loaded, loaded_plugins, pool)
            row = box.find(tool)
            if row is None:
                known = ", ".join(r.name for r in box.rows) or "none"
                down = "".join(f"; MCP server {s} is unreachable: {why}" for s, why in box.acquired.unavailable.items())
                withheld = [w for w in box.withheld if tool in (w.name, w.original)]
                why = "".join(f"; withheld: {w.reason}" for w in withheld)
                typer.echo(printable(f"error: agent {loaded.name} has no tool {tool!r}{why}; available: {known}{down}"),
                           err=True)
                return 2
            if not json_out:
                typer.echo(printable(f"-> {row.source}: {row.original} {json.dumps(arguments)}"), err=True)
            try:
                with plugin_output():  # a plugin tool's prints are not its result
                    text, failure = (await call_row(row, arguments, box.recorder))[0], None
            except ToolFailure as exc:
                text, failure = "", str(exc)
            record = box.recorder.records[-1] if box.recorder.records else None
            if json_out:
                typer.echo(json.dumps({"result": text, "failure": failure,
                                       "record": record.as_dict() if record else None}, indent=2))
            else:
                if record is not None:
                    typer.echo(printable(
                        f"<- {record.outcome} in {record.latency_ms:.1f} ms, {record.result_chars} characters"
                        + (f": {record.error}" if record.error else "")), err=True)
                if failure is None:
                    typer.echo(printable(text, lines=True))  # the server's text; multi-line is fine
                else:  # the server's words, once, its lines kept (the record's error is our own)
                    typer.echo(printable(f"error: {failure}", lines=True), err=True)
            if metrics:
                typer.echo(_our_metrics(), nl=False)
            return 0 if failure is None else 1
        finally:
            await pool.aclose()

    raise typer.Exit(asyncio.run(main()))


def _our_metrics() -> str:
    from prometheus_client import REGISTRY, generate_latest

    text = generate_latest(REGISTRY).decode()
    return "".join(line + "\n" for line in text.splitlines() if "voice_runtime_" in line)


@app.command()
def serve(
    agents_dir: AgentsDir,
    plugins: PluginsOpt = None,
    http_host: Annotated[str, typer.Option("--http-host", help="Address of the operator port.")] = "0.0.0.0",
    http_port: Annotated[int, typer.Option("--http-port", min=1, max=65535, help="The status page (/), /healthz /readyz /metrics /status.")] = 8081,
    executor: Annotated[Executor, typer.Option("--executor", help="process (one process per call) or thread.")] = Executor.PROCESS,
    idle_processes: Annotated[int, typer.Option("--idle-processes", min=0, max=64, help="Job processes kept prewarmed for the whole serve (any agent's call takes one; at most 64: each holds about 100 MiB).")] = 1,
    dispatch: Annotated[Dispatch, typer.Option("--dispatch", help="name: register every agent name with LiveKit. metadata: register --agent-name once; each job names its agent in its dispatch metadata {\"agent\": \"<name>\"}.")] = Dispatch.NAME,
    agent_name: Annotated[Optional[str], typer.Option("--agent-name", help="The one agent name registered with --dispatch metadata. [default: voice-runtime]")] = None,
    route_from_attributes: Annotated[bool, typer.Option("--route-from-attributes", help="With --dispatch metadata, also route by the `agent` attribute of the job's participant, when neither the dispatch nor the room metadata names an agent (only if callers must be able to pick).")] = False,
    route_allow: Annotated[Optional[list[str]], typer.Option("--route-allow", metavar="GLOB", help="With --dispatch metadata, the agents a job may be routed to (names or globs such as 'tenant-*', comma-separated or repeated); a job naming another is refused. [default: every served agent]")] = None,
    job_memory_warn_mb: Annotated[float, typer.Option("--job-memory-warn-mb", min=0, help="Log a warning when a call's process uses more (MB; 0: never).")] = 1000.0,
    job_memory_limit_mb: Annotated[float, typer.Option("--job-memory-limit-mb", min=0, help="End a call whose process uses more (MB; 0: no limit); counted in voice_runtime_jobs_memory_killed_total.")] = 0.0,
    load_threshold: Annotated[float, typer.Option("--load-threshold", min=0, max=1, help="Above this load LiveKit sends no new calls.")] = 0.7,
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", min=0, max=86400, help="Seconds calls in progress get to finish on stop or removal.")] = 300.0,
    scan_interval: Annotated[float, typer.Option("--scan-interval", min=0, help="Seconds between content-hash scans that catch missed file events (0: off).")] = 10.0,
    unregistered: Annotated[bool, typer.Option("--unregistered", help="Do not connect to LiveKit (development and tests).")] = False,
    simulate: Annotated[bool, typer.Option("--simulate", help="Enable POST /simulate: text-only calls with no LiveKit server.")] = False,
    simulate_from_anywhere: Annotated[bool, typer.Option("--simulate-from-anywhere", help="Accept POST /simulate from other hosts, not only this machine.")] = False,
    require_tests: Annotated[bool, typer.Option("--require-tests", help="Serve a new or changed agent only if its "
                                                "scripted conversation tests (DIR/tests/*.yaml) pass.")] = False,
    local: Annotated[bool, typer.Option("--local", help="No LiveKit: talk to the agents from a browser at /talk/<agent> (the default when LIVEKIT_URL is not set).")] = False,
    talk_from: Annotated[Optional[list[str]], typer.Option("--talk-from", metavar="CIDR", help="Also accept browser calls from these networks (comma-separated or repeated; needs --talk-token). [default: this machine only]")] = None,
    talk_token: Annotated[Optional[str], typer.Option("--talk-token", metavar="'${VAR}'", help="The bearer token browser callers from --talk-from networks must give, as a ${VAR} read from the environment.")] = None,
    max_browser_calls: Annotated[int, typer.Option("--max-browser-calls", min=0, max=64, help="Browser calls at once, over all agents (each is a job process); more get 429.")] = 2,
    max_call_seconds: Annotated[float, typer.Option("--max-call-seconds", min=1, max=86400, help="A browser call is ended after this many seconds.")] = 600.0,
    log_format: Annotated[LogFormat, typer.Option("--log-format", help="text or json.")] = LogFormat.text,
    log_level: LogLevelOpt = LogLevel.info,
) -> None:
    """Serve every spec as a LiveKit agent from one pool of job processes; reload on change; one operator port.

    LiveKit is reached through LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET. Without
    LIVEKIT_URL (or with --local) serve runs without LiveKit and you talk to each agent
    from a browser at http://127.0.0.1:PORT/talk/<agent> (the URL is printed at start).
    """
    import os

    livekit = {v: os.environ.get(v, "") for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")}
    # no LiveKit URL at all: the agents are for browser callers (the two-command quick start)
    local = local or (not livekit["LIVEKIT_URL"] and not unregistered)
    missing = [v for v, value in livekit.items() if not value]
    if missing and not unregistered and not local:
        typer.echo(f"error: {', '.join(missing)} not set (LiveKit's URL and API credentials; "
                   "or use --local to talk to the agents from a browser without LiveKit)", err=True)
        raise typer.Exit(2)
    talk = _talk_options(talk_from, talk_token, max_browser_calls, max_call_seconds)
    if agent_name is not None and dispatch is Dispatch.NAME:
        typer.echo("error: --agent-name is the one name of --dispatch metadata; with --dispatch name every "
                   "agent registers under its own name", err=True)
        raise typer.Exit(2)
    routing = [flag for flag, given in (("--route-from-attributes", route_from_attributes),
                                        ("--route-allow", bool(route_allow))) if given]
    if routing and dispatch is Dispatch.NAME:
        typer.echo(f"error: {' and '.join(routing)} {'is' if len(routing) == 1 else 'are'} for --dispatch metadata, "
                   "where each job names its agent; with --dispatch name LiveKit dispatches each job to its "
                   "agent's own registered name", err=True)
        raise typer.Exit(2)
    # agent names hold no comma: "billing,lobby" is two of them
    allow = tuple(g.strip() for given in route_allow or () for g in given.split(","))
    if "" in allow:
        typer.echo("error: --route-allow has an empty pattern, which matches no agent; give names or globs "
                   "such as 'billing,tenant-*'", err=True)
        raise typer.Exit(2)
    from .spec.loader import valid_agent_name

    if agent_name is not None and not valid_agent_name(agent_name):
        typer.echo(f"error: --agent-name {printable(agent_name[:80])!r} is not an agent name (1-63 letters, "
                   "digits, '_', '.' or '-', starting with a letter or digit; an empty name would ask "
                   "LiveKit for every room)", err=True)
        raise typer.Exit(2)
    require_dir(agents_dir)
    from .logs import setup_logging
    from .serve import run_serve
    from .serve.options import ServeOptions

    secrets = _guard_output()
    if talk.token is not None:
        secrets.add({talk.token: talk.token_name or "${TOKEN}"})
    setup_logging(log_format.value, log_level.value, secrets)
    options = ServeOptions(
        # watched even when it does not exist yet: a plugins/ folder made later is loaded
        agents_dir=agents_dir, plugins_dir=plugins_dir_for(agents_dir, plugins),
        http_host=http_host, http_port=http_port, executor=executor, idle_processes=idle_processes,
        dispatch=dispatch, agent_name=agent_name or "voice-runtime", route_from_attributes=route_from_attributes,
        route_allow=allow, job_memory_warn_mb=job_memory_warn_mb,
        job_memory_limit_mb=job_memory_limit_mb,
        load_threshold=load_threshold, drain_timeout=drain_timeout, scan_interval=scan_interval,
        unregistered=unregistered or local, local=local, talk=talk, simulate=simulate, simulate_from_anywhere=simulate_from_anywhere,
        require_tests=require_tests,
        ws_url=livekit["LIVEKIT_URL"], api_key=livekit["LIVEKIT_API_KEY"], api_secret=livekit["LIVEKIT_API_SECRET"],
    )
    raise typer.Exit(run_serve(options, secrets=secrets))


def _talk_options(allow_from: list[str] | None, token_ref: str | None, max_calls: int,
                  max_call_seconds: float) -> Any:
    """--talk-from, --talk-token and the limits of browser calls; bad values are
    usage errors naming the option (exit 2)."""
    import ipaddress
    import os
    import re

    from .serve.options import TalkOptions

    networks = tuple(n.strip() for given in allow_from or () for n in given.split(","))
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            _usage_error(printable(f"--talk-from {network[:80]!r} is not a network (such as 10.0.0.0/8 or 192.168.1.7)"))
    token = name = None
    if token_ref is not None:
        match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", token_ref.strip())
        if match is None:
            # a literal token would be in the process list and the shell history
            _usage_error("--talk-token takes a ${VAR} (the token is read from that environment variable), "
                         "such as --talk-token '${TALK_TOKEN}'")
        name = f"${{{match.group(1)}}}"
        token = os.environ.get(match.group(1), "")
        if len(token) < 16:
            _usage_error(f"--talk-token {name}: the variable is {'not set' if not token else 'shorter than 16 characters'}"
                         " (a bearer token others must not guess)")
    if networks and token is None:
        _usage_error("--talk-from needs --talk-token '${VAR}': callers from other hosts spend your provider keys, "
                     "so they must give the token")
    return TalkOptions(allow_from=networks, token=token, token_name=name, max_calls=max_calls,
                       max_call_seconds=max_call_seconds)


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
    import os
    import threading

    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "console"):
        return
    if not any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        return
    if exc.code is not None and not isinstance(exc.code, int):
        print(exc.code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)


if __name__ == "__main__":
    main()
