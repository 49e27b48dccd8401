"""`voice-runtime serve`: every spec a LiveKit agent, reloaded on change, one operator port."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..core.terminal import printable
from ..observe.report_spool import Retention
from ..serve.options import Dispatch, Executor
from .common import AgentsDir, LogLevelOpt, PluginsOpt, TelephonyOpt, guard_output, plugins_dir_for, require_dir, \
    usage_error
from .option_choices import LogFormat, LogLevel

if TYPE_CHECKING:
    from ..serve.options import CallsOptions, TalkOptions


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
    full_load_calls: Annotated[int, typer.Option("--full-load-calls", min=0, max=10000, help="Calls that make this serve fully loaded: the load reported to LiveKit (and voice_runtime_load) is the larger of CPU use and calls / N, so LiveKit stops sending calls at --load-threshold x N. Size N from benchmarks/concurrent_calls.py's knee (0: CPU alone).")] = 0,
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
    report_spool: Annotated[Optional[Path], typer.Option("--report-spool", metavar="DIR", help="Where call reports wait for delivery (put it on a volume: a serve started on it later, even after a crash, delivers what is left). One serve at a time per folder (a second is refused). [default: $XDG_STATE_HOME/voice-runtime/reports/port-<http port>, or ~/.local/state/...]")] = None,
    report_dead_max: Annotated[int, typer.Option("--report-dead-max", min=0, max=10_000_000, help="Undeliverable call reports kept in the spool's dead/ folder; the oldest beyond go first, logged and counted in voice_runtime_reports_dead_removed_total (0: no bound).")] = Retention.max_count,
    report_dead_max_mb: Annotated[float, typer.Option("--report-dead-max-mb", min=0, max=1_000_000, help="MiB the undeliverable call reports in dead/ may take in all; the oldest beyond go first (0: no bound).")] = Retention.max_bytes / 2**20,
    report_dead_max_days: Annotated[float, typer.Option("--report-dead-max-days", min=0, max=3650, help="Days an undeliverable call report is kept in dead/ (0: no bound).")] = Retention.max_age_s / 86400,
    telephony: TelephonyOpt = None,
    manage_sip: Annotated[bool, typer.Option("--manage-sip", help="Apply the phone lines (telephony/*.yaml) to LiveKit at start and on every change, as `sip apply` does; errors are logged and serving goes on.")] = False,
    sip_owner: Annotated[str, typer.Option("--sip-owner", help="Whose managed SIP objects these are (see `sip apply --owner`).")] = "default",
    calls_token: Annotated[Optional[str], typer.Option("--calls-token", metavar="'${VAR}'", help="Enable POST /calls (an agent calls a number); callers must give this bearer token, as a ${VAR} read from the environment.")] = None,
    calls_per_minute: Annotated[int, typer.Option("--calls-per-minute", min=1, max=10000, help="POST /calls places at most this many calls a minute; more get 429.")] = 10,
    reports: Annotated[Optional[Path], typer.Option("--reports", metavar="FILE.yaml", help="Report targets for every call of every agent, besides each spec's `reports:` (apiVersion: voice-runtime/v1, reports: [{webhook: {url, secret}}, {file: {dir}}]).")] = None,
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
    calls = _calls_options(calls_token, calls_per_minute)
    needs_livekit = [flag for flag, given in (("--manage-sip", manage_sip), ("--calls-token", calls is not None)) if given]
    if needs_livekit and missing:
        usage_error(f"{' and '.join(needs_livekit)} need{'s' if len(needs_livekit) == 1 else ''} LiveKit's API: "
                    f"{', '.join(missing)} not set")
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
    from ..spec.loader import valid_agent_name

    if agent_name is not None and not valid_agent_name(agent_name):
        typer.echo(f"error: --agent-name {printable(agent_name[:80])!r} is not an agent name (1-63 letters, "
                   "digits, '_', '.' or '-', starting with a letter or digit; an empty name would ask "
                   "LiveKit for every room)", err=True)
        raise typer.Exit(2)
    require_dir(agents_dir)
    from ..observe.logs import setup_logging
    from ..serve import run_serve
    from ..serve.options import ServeOptions

    secrets = guard_output()
    if talk.token is not None:
        secrets.add({talk.token: talk.token_name or "${TOKEN}"})
    if calls is not None:
        secrets.add({calls.token: calls.token_name})
    setup_logging(log_format.value, log_level.value, secrets)
    options = ServeOptions(
        # watched even when it does not exist yet: a plugins/ folder made later is loaded
        agents_dir=agents_dir, plugins_dir=plugins_dir_for(agents_dir, plugins),
        http_host=http_host, http_port=http_port, executor=executor, idle_processes=idle_processes,
        dispatch=dispatch, agent_name=agent_name or "voice-runtime", route_from_attributes=route_from_attributes,
        route_allow=allow, job_memory_warn_mb=job_memory_warn_mb,
        job_memory_limit_mb=job_memory_limit_mb,
        load_threshold=load_threshold, full_load_calls=full_load_calls, drain_timeout=drain_timeout, scan_interval=scan_interval,
        unregistered=unregistered or local, local=local, talk=talk, simulate=simulate, simulate_from_anywhere=simulate_from_anywhere,
        require_tests=require_tests, report_spool=report_spool or _default_spool(http_port),
        report_dead=Retention(report_dead_max, report_dead_max_days * 86400, int(report_dead_max_mb * 2**20)),
        telephony_dir=telephony, manage_sip=manage_sip, sip_owner=sip_owner, calls=calls,
        report_targets=tuple(_report_targets(reports, secrets)) if reports is not None else (),
        ws_url=livekit["LIVEKIT_URL"], api_key=livekit["LIVEKIT_API_KEY"], api_secret=livekit["LIVEKIT_API_SECRET"],
    )
    rc = run_serve(options, secrets=secrets)
    if rc > 128:
        # a second stop signal: serve has stopped its MCP servers and removed its folders;
        # the interpreter's own exit (threads, module teardown) is what remains, and the
        # README promises about a second
        from ..core.leave import leave_now

        leave_now(rc)
    raise typer.Exit(rc)


def _report_targets(path: Path, secrets: SecretSet) -> list[dict[str, Any]]:
    """--reports FILE read like a spec (errors at file:line:col, exit 2); its ``${VAR}``
    values join ``secrets`` like a spec's."""
    import sys

    from ..plugins.manager import make_plugin_manager
    from ..spec.loader import SpecLoader
    from ..spec.reports_file import load_reports_file

    got = load_reports_file(path, SpecLoader(make_plugin_manager(None, entry_points=False, trial=False)))
    if isinstance(got, list):
        for error in got:
            print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2)
    targets, values = got
    secrets.add(values)
    return targets


def _default_spool(http_port: int) -> Path:
    """One per operator port: a serve restarted on its port finds what its predecessor
    left, and two serves of one user on one machine (never on one port) never share a
    spool (a shared one is refused at start: SpoolInUse)."""
    import os

    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "voice-runtime" / "reports" / f"port-{http_port}"


def _talk_options(allow_from: list[str] | None, token_ref: str | None, max_calls: int,
                  max_call_seconds: float) -> TalkOptions:
    """--talk-from, --talk-token and the limits of browser calls; bad values are
    usage errors naming the option (exit 2)."""
    import ipaddress

    from ..serve.options import TalkOptions

    networks = tuple(n.strip() for given in allow_from or () for n in given.split(","))
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            usage_error(printable(f"--talk-from {network[:80]!r} is not a network (such as 10.0.0.0/8 or 192.168.1.7)"))
    token, name = _token("--talk-token", "TALK_TOKEN", token_ref) if token_ref is not None else (None, None)
    if networks and token is None:
        usage_error("--talk-from needs --talk-token '${VAR}': callers from other hosts spend your provider keys, "
                    "so they must give the token")
    return TalkOptions(allow_from=networks, token=token, token_name=name, max_calls=max_calls,
                       max_call_seconds=max_call_seconds)


def _token(option: str, example: str, token_ref: str) -> tuple[str, str]:
    """A bearer token option's value read from the ${VAR} it names, and that ${VAR}."""
    import os
    import re

    from ..core.mounted import mounted_secret

    match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", token_ref.strip())
    if match is None:
        # a literal token would be in the process list and the shell history
        usage_error(f"{option} takes a ${{VAR}} (the token is read from that environment variable), "
                    f"such as {option} '${{{example}}}'")
    name = f"${{{match.group(1)}}}"
    # a Kubernetes secret mounted as a file and read into the variable ends in a newline
    token = mounted_secret(os.environ.get(match.group(1), ""))
    if len(token) < 16:
        usage_error(f"{option} {name}: the variable is {'not set' if not token else 'shorter than 16 characters'}"
                    " (a bearer token others must not guess)")
    return token, name


def _calls_options(token_ref: str | None, per_minute: int) -> CallsOptions | None:
    from ..serve.options import CallsOptions

    if token_ref is None:
        return None
    token, name = _token("--calls-token", "CALLS_TOKEN", token_ref)
    return CallsOptions(token=token, token_name=name, per_minute=per_minute)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
