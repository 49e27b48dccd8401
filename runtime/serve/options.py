"""What `voice-runtime serve` is asked to do: the CLI builds one ``ServeOptions``
and hands it over whole; the supervisor and its rooms read it, never the CLI."""

from __future__ import annotations

import enum
import fnmatch
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..observe.report_spool import Retention


class Executor(str, enum.Enum):
    """Where a call runs: livekit's JobExecutorType, spelled as on the command line."""

    PROCESS = "process"  # one process per call (livekit's default)
    THREAD = "thread"  # a thread of the serve process; jobs share serve's MCP pool


class Dispatch(str, enum.Enum):
    """How LiveKit's jobs find their agent (see routing.py)."""

    NAME = "name"  # one LiveKit registration per agent name
    METADATA = "metadata"  # one registration for the serve; each job names its agent


@dataclass(frozen=True)
class Route:
    """How jobs find their agent (routing.py): plain values, pickled to job processes
    with the entrypoint."""

    dispatch: Dispatch = Dispatch.NAME
    from_attributes: bool = False  # --route-from-attributes
    allow: tuple[str, ...] = ()  # --route-allow globs; empty: any served agent

    def allows(self, name: str) -> bool:
        return not self.allow or _allowed(self.allow).fullmatch(name) is not None


@functools.lru_cache(maxsize=8)
def _allowed(globs: tuple[str, ...]) -> re.Pattern[str]:
    # case-sensitive, as agent names are (fnmatch.fnmatch folds case on some systems)
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@dataclass(frozen=True)
class TalkOptions:
    """Who may call an agent from a browser (GET /talk/<agent>), and for how long.
    Browser calls spend the operator's provider keys: loopback callers only, unless
    ``allow_from`` names networks, and then every caller must present ``token``."""

    allow_from: tuple[str, ...] = ()  # --talk-from CIDR networks (besides loopback)
    token: str | None = None  # the value of --talk-token's ${VAR}
    token_name: str | None = None  # that ${VAR}, as shown instead of the value
    max_calls: int = 2  # --max-browser-calls, at once over all agents
    max_call_seconds: float = 600.0  # --max-call-seconds


@dataclass(frozen=True)
class CallsOptions:
    """POST /calls (phones.py): the bearer token (the value of --calls-token's ${VAR})
    and how many calls a minute may be placed."""

    token: str
    token_name: str
    per_minute: int = 10


@dataclass(frozen=True)
class ServeOptions:
    agents_dir: Path
    plugins_dir: Path | None
    http_host: str = "0.0.0.0"
    http_port: int = 8081
    executor: Executor = Executor.PROCESS
    idle_processes: int = 1  # prewarmed job processes for the whole serve, any agent
    dispatch: Dispatch = Dispatch.NAME
    agent_name: str = "voice-runtime"  # the one name registered with --dispatch metadata
    route_from_attributes: bool = False  # --dispatch metadata: the participant's `agent` attribute routes too
    route_allow: tuple[str, ...] = ()  # --dispatch metadata: globs of the agents a job may be routed to
    job_memory_warn_mb: float = 1000.0  # livekit logs a warning above this (per job process)
    job_memory_limit_mb: float = 0.0  # livekit kills a job process above this; 0: no limit
    load_threshold: float = 0.7
    full_load_calls: int = 0  # --full-load-calls: calls that make load 1.0 (load.py); 0: CPU alone
    drain_timeout: float = 300.0
    scan_interval: float = 10.0
    unregistered: bool = False  # no LiveKit connection (development, tests)
    simulate: bool = False  # POST /simulate starts text-only fake jobs
    simulate_from_anywhere: bool = False  # otherwise only loopback peers may POST /simulate
    require_tests: bool = False  # an agent is served only if its scripted conversation tests pass
    local: bool = False  # no LiveKit at all: browser calls (/talk) are how agents are reached
    talk: TalkOptions = TalkOptions()  # browser calls: GET /talk/<agent> (talk.py)
    # --report-spool: where call reports wait for delivery; it must outlive serve (a volume)
    report_spool: Path | None = None
    report_dead: Retention = Retention()  # --report-dead-max, --report-dead-max-days: how much of dead/ is kept
    telephony_dir: Path | None = None  # --telephony; None: telephony/ inside agents_dir
    manage_sip: bool = False  # apply the phone lines to LiveKit on every (re)load
    sip_owner: str = "default"  # --sip-owner: whose managed SIP objects these are
    calls: CallsOptions | None = None  # POST /calls, when --calls-token is given
    # --reports FILE: report targets for every call of every agent, besides each spec's own
    report_targets: tuple[dict[str, Any], ...] = ()
    ws_url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None

    @property
    def route(self) -> Route:
        return Route(self.dispatch, self.route_from_attributes, self.route_allow)
