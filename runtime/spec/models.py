"""The v1 spec as pydantic models.

Provider options come from plugins, so the full model is built per registry by
``spec_model(registry)``: each ``provider:`` field is a union discriminated on the
provider name, and the JSON Schema exported from it completes plugin providers too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, Union, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretBytes,
    SecretStr,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .telephony_agent import Telephony
from .turn_taking import BackgroundAudio, TurnHandling
from .analysis import Analysis
from .mcp_context import MAX_RESOURCES, ContextResource, InstructionsFrom
from .mcp_auth import McpAuth
from ..core.mounted import BOM, header_trouble, mounted_secret


def http_url(value: str) -> str:
    """An MCP server's or a webhook's URL: http(s) with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError("url", "must be an http:// or https:// URL with a host")
    return value


class ProviderView(Protocol):
    """A provider as ``plugins.registry`` records it (plugins sit above spec: the
    registry is handed down, never imported)."""

    name: str
    plugin: str
    options: type[BaseModel]


class RegistryView(Protocol):
    """What a spec model needs of ``plugins.registry.Registry``."""

    @property
    def tools(self) -> Mapping[str, Any]: ...

    def providers_of(self, kind: str) -> Sequence[ProviderView]: ...

API_VERSION = "voice-runtime/v1"
# LiveKit agent names travel in dispatch requests and metric labels: keep them
# to a conservative, URL- and label-safe alphabet.
AGENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SERVER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
TOOL_PREFIX_PATTERN = r"^[A-Za-z0-9_-]{0,32}$"
TURN_DETECTION = Literal["vad", "stt", "realtime_llm", "manual", "model"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filler(StrictModel):
    """What the agent says while a tool call has not returned."""

    after_ms: int = Field(
        800, ge=0, le=600_000, description="Milliseconds a call may run before the agent says a filler line."
    )
    say: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="Filler lines, said in turn (the first, then the next...)."
    )
    every_ms: int | None = Field(
        None, ge=500, le=600_000,
        description="While the call still runs, say the next line at most this often. Default: once.",
    )
    on_result: Literal["wait", "interrupt"] = Field(
        "wait", description="A result arriving during a filler: `wait` lets the filler finish, `interrupt` cuts it.",
    )
    say_progress: bool = Field(
        False, description="Say the server's own progress and task status messages (once after_ms has passed, "
        "at most one every 3 s, each new message once) in place of the next filler line.",
    )


class ToolVoice(StrictModel):
    """Per-tool voice settings; each given key overrides its server's."""

    filler: Filler | None = Field(None, description="Filler speech for this tool (overrides the server's).")
    timeout_say: str | None = Field(
        None, min_length=1, description="Said when this tool's call times out (overrides the server's)."
    )
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Pinned arguments, e.g. {customer_id: \"${call.customer_id}\"}: removed from the schema the "
        "model sees and merged into every call of this tool, so the model can neither see nor forge them.",
    )


class Sampling(StrictModel):
    """A server may ask our model for a completion (MCP sampling) during a call."""

    allow: bool = Field(False, description="true: announce the sampling capability and answer with the agent's LLM.")
    max_requests: int = Field(5, ge=1, le=1000, description="Sampling requests answered per call; later ones are refused.")
    max_tokens: int = Field(512, ge=1, le=32768, description="The most tokens one answer may have (a server's larger ask is lowered).")


class McpServerBase(StrictModel):
    allowed_tools: list[str] | None = Field(
        None, description="Only these tools are shown to the model (default: all the server lists)."
    )
    prefix: str | None = Field(
        None,
        pattern=TOOL_PREFIX_PATTERN,
        description="Prepended to every tool name, so two servers can expose the same tool.",
    )
    timeout: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds per tool call before it is abandoned; each progress notification from the server "
        "restarts it, up to max_timeout.",
    )
    max_timeout: float | None = Field(
        None, gt=0, le=18000,
        description="Seconds a call that keeps reporting progress may run in all. Default: 5 x timeout.",
    )
    connect_timeout: float = Field(10.0, gt=0, le=600, description="Seconds to connect and list tools.")
    required: bool = Field(
        False, description="true: refuse sessions while this server is down. false: start degraded."
    )
    max_result_chars: int = Field(
        16384, ge=256, le=10_000_000,
        description="Longer tool results are cut to this many characters, with a marker saying so.",
    )
    shared: bool = Field(
        True,
        description="true: one warm connection per serve, lent to every call of every agent with this same "
        "block. false: each call starts (stdio) or opens (HTTP) its own, for a server that keeps "
        "per-caller state.",
    )
    pin_tools: bool = Field(
        False,
        description="Withhold a tool whose description or schema changed since the first connection "
        "(or since `voice-runtime tools --lock`), instead of only logging the change.",
    )
    trace_arguments: bool = Field(
        False,
        description="Record the arguments of this server's tool calls on their trace spans (secrets "
        "redacted; at most 4096 characters). Default: only their digest.",
    )
    elicitation: Literal["allow", "deny"] = Field(
        "allow",
        description="allow: announce the MCP elicitation capability, so the server may ask a question during a "
        "tool call (form mode, primitive fields only; URL mode is declined). A shared block stays pooled: the "
        "question goes to the one call whose tool call is in flight and can have asked it, else it is cancelled. "
        "deny: the capability is not announced.",
    )
    sampling: Sampling = Field(
        default_factory=Sampling,
        description="Whether and how much the server may ask the agent's LLM for completions (default: never). "
        "Such a block is connected per call (never pooled): the call's model answers.",
    )
    roots: list[str] = Field(
        default_factory=list,
        description="file:// URIs announced to the server as its roots (the MCP roots capability, announced only "
        "when this lists some).",
    )
    elicitation_confirm: bool = Field(
        True, description="In a call, the runtime reads the caller's answers back and sends them only once the "
        "caller says yes (a secret field's value is not said). false: the model's answers are sent at once.")
    elicitation_timeout: float = Field(
        120.0, gt=0, le=600, description="Seconds a server's question may wait for its answer before it is cancelled."
    )
    filler: Filler | None = Field(
        None, description="Filler speech while a tool call of this server runs (e.g. after_ms: 800, say: [...])."
    )
    timeout_say: str | None = Field(
        None, min_length=1, description="Said when a call times out, instead of the model explaining the failure."
    )
    tools: dict[str, ToolVoice] = Field(
        default_factory=dict, description="Per-tool filler / timeout_say, by the tool's name on the server."
    )

    @field_validator("roots")
    @classmethod
    def _file_uris(cls, value: list[str]) -> list[str]:
        for uri in value:
            parts = urlsplit(uri)
            if parts.scheme != "file" or not parts.path.startswith("/"):
                raise PydanticCustomError("root", "'{uri}' is not a file:// URI with an absolute path "
                                          "(e.g. file:///srv/data)", {"uri": uri})
        return value

    @field_validator("max_timeout")
    @classmethod
    def _max_timeout_covers_timeout(cls, value: float | None, info: ValidationInfo) -> float | None:
        timeout = info.data.get("timeout")
        if value is not None and isinstance(timeout, (int, float)) and value < timeout:
            raise PydanticCustomError(
                "max_timeout", "must be at least timeout ({timeout}s): it bounds a call that reports progress",
                {"timeout": f"{timeout:g}"})
        return value

    @property
    def pooled(self) -> bool:
        """Connected once per serve and lent to calls: ``shared`` and not sampling (a
        completion is the call's model's, counted against the call's limit). A question
        (elicitation) on a pooled connection finds its caller through the tool call in
        flight (``mcp.elicitation.Callers``)."""
        return self.shared and not self.sampling.allow

    @property
    def resolved_max_timeout(self) -> float:
        return self.max_timeout if self.max_timeout is not None else 5 * self.timeout

    @model_validator(mode="after")
    def _voice_tools_allowed(self) -> McpServerBase:
        if self.allowed_tools is not None:
            unknown = sorted(set(self.tools) - set(self.allowed_tools))
            if unknown:
                raise PydanticCustomError(
                    "voice_tool", "`tools:` names {names}, which allowed_tools does not list "
                    "(its settings would never apply); allowed: {allowed}",
                    {"names": ", ".join(unknown), "allowed": ", ".join(self.allowed_tools) or "none"})
        return self


class StdioServer(McpServerBase):
    """An MCP server started as a child process, spoken to over stdin/stdout."""

    command: str = Field(min_length=1, description="Executable, found on PATH or relative to the spec.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment for the server. It gets these plus PATH/HOME/LANG, not the runtime's env.",
    )
    cwd: str | None = Field(None, description="Working directory, relative to the spec file.")


class HttpServer(McpServerBase):
    """An MCP server reached over streamable HTTP or SSE."""

    url: str = Field(description="http(s) URL; a path ending in /sse means SSE, anything else streamable HTTP.")
    transport: Literal["streamable_http", "sse"] | None = Field(
        None, description="Default: inferred from the URL path."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request; use ${VAR} for secrets.")
    auth: McpAuth | None = Field(None, description="OAuth 2.1 for this server: `{oauth: {...}}` (see README).")

    @model_validator(mode="before")
    @classmethod
    def _per_call_not_shared(cls, data: Any) -> Any:
        # a block authenticated or addressed with a call's values belongs to that call:
        # never connected ahead by serve's pool, never lent to another call
        if not isinstance(data, dict):
            return data
        texts = [data.get("url")] + list((data.get("headers") or {}).values() if isinstance(data.get("headers"), dict) else [])
        if any(isinstance(t, str) and "${call." in t for t in texts):
            if data.get("shared") is True:
                raise PydanticCustomError(
                    "shared", "this server uses ${call.*} in its url or headers, so each call connects with its "
                    "own values: it cannot be `shared: true` (drop the key)")
            data = {**data, "shared": False}
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        # A Kubernetes Secret mounted from a file usually ends in a newline, which
        # HTTP forbids in a header: trailing CR/LF are dropped. A line break inside
        # the value is refused (it would split the header); the value is not echoed.
        out = {}
        for name, text in value.items():
            text = mounted_secret(text)
            if "\r" in text or "\n" in text:
                raise PydanticCustomError(
                    "header_value", "header {name} has a line break inside its value; "
                    "only trailing line breaks (a mounted secret file's) are removed", {"name": name})
            trouble = header_trouble(text)
            if trouble is not None and BOM in text:
                raise PydanticCustomError("header_value", "header {name} {trouble}", {"name": name, "trouble": trouble})
            if trouble is not None:
                raise PydanticCustomError(
                    "header_value", "header {name} has a character HTTP headers cannot carry "
                    "(non-ASCII or a control character); percent- or base64-encode it", {"name": name})
            out[name] = text
        return out

    @property
    def resolved_transport(self) -> Literal["streamable_http", "sse"]:
        if self.transport is not None:
            return self.transport
        return "sse" if urlsplit(self.url).path.rstrip("/").endswith("/sse") else "streamable_http"


def _mcp_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "command" in value:
            return "stdio"
        if "url" in value:
            return "http"
        return None
    return "stdio" if isinstance(value, StdioServer) else "http" if isinstance(value, HttpServer) else None


McpServer = Annotated[
    Union[Annotated[StdioServer, Tag("stdio")], Annotated[HttpServer, Tag("http")]],
    Discriminator(
        _mcp_kind,
        custom_error_type="mcp_server_kind",
        custom_error_message="an MCP server needs either `command` (stdio) or `url` (HTTP)",
    ),
]


def _known_tool(value: str, info: ValidationInfo) -> str:
    # The registry travels in the validation context: the model itself is static.
    known = (info.context or {}).get("tools")
    if known is not None and value not in known:
        available = ", ".join(sorted(known)) or "none registered"
        raise PydanticCustomError(
            "unknown_tool", "unknown tool '{tool}'; available: {available}", {"tool": value, "available": available}
        )
    return value


def regex_text(value: str) -> str:
    """A validator: the text is a regular expression ``user_regex`` accepts (it
    compiles, and compiling it is quick)."""
    from ..core.user_regex import problem

    why = problem(value)
    if why is not None:
        raise PydanticCustomError("regex", "{why}", {"why": why})
    return value


class Handoff(StrictModel):
    """A tool ``transfer_to_<agent>`` the model may call to continue the same
    session as another agent of the folder."""

    agent: str = Field(pattern=AGENT_NAME_PATTERN, description="The agent the session continues as (its name).")
    when: str = Field(min_length=1, description="Told to the model as the tool's description: when to transfer.")
    history: Literal["full", "summary", "none"] = Field(
        "full", description="What the target agent is given of the conversation so far: all of it, "
        "a summary written by the current model, or nothing.")


# each is compiled when a job reads the spec and again for its first check: 100 of the
# slowest patterns user_regex accepts take about a second (500 unbounded ones, 12 minutes)
MAX_CLAIM_PATTERNS = 100


class Claims(StrictModel):
    """What to do when a reply claims an action or a lookup but no tool ran in that turn."""

    patterns: list[Annotated[str, AfterValidator(regex_text)]] = Field(
        default_factory=list, max_length=MAX_CLAIM_PATTERNS,
        description="Extra regular expressions (case-insensitive) that mark a claim, besides the built-in English ones.",
    )
    action: Literal["warn", "retry"] = Field(
        "warn", description="warn: report it (log, metric, hook). retry: also ask the model once more, "
        "with a note that no tool ran.")


MAX_WEBHOOK_URL_CHARS = 2048


class WebhookReport(StrictModel):
    """POST each call's report, signed the Standard Webhooks way."""

    url: str = Field(max_length=MAX_WEBHOOK_URL_CHARS, description="http(s) URL the report is POSTed to "
                     "(redirects are not followed: the signed report goes only here).")
    secret: str = Field(description="The signing secret, `whsec_` + base64 (as Standard Webhooks libraries make "
                        "it); use ${VAR}.")
    timeout_s: float = Field(10.0, gt=0, le=60, description="Seconds one delivery attempt may take.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str) -> str:
        import base64
        import binascii

        body = value.strip().removeprefix("whsec_")
        try:
            key = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < 16:  # the value is not echoed: it is a secret
            raise PydanticCustomError("webhook_secret", "must be `whsec_` followed by base64 of at least 16 bytes "
                                      "(e.g. python -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(24)).decode())\")")
        return value.strip()


class FileReport(StrictModel):
    """Write each call's report as `<id>.json` into a folder."""

    dir: str = Field(min_length=1, description="The folder (relative to the spec's folder, or absolute).")


class ReportTarget(StrictModel):
    """Where a call's report goes: give `webhook` or `file`."""

    webhook: WebhookReport | None = None
    file: FileReport | None = None

    @model_validator(mode="after")
    def _one(self) -> ReportTarget:
        if (self.webhook is None) == (self.file is None):
            raise PydanticCustomError("report_target", "a report target is `{webhook: {url, secret}}` or "
                                      "`{file: {dir}}`, one per list entry")
        return self


CONTEXT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
CONTEXT_SOURCE_PATTERN = r"^(dispatch|room):[^\s]{1,128}$|^participant:[^\s]{1,128}$"


class ContextValue(StrictModel):
    """One value a call may carry, used as ``${call.NAME}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(
        alias="from", json_schema_extra={"pattern": CONTEXT_SOURCE_PATTERN},
        description="Where a LiveKit call carries it: `dispatch:KEY` (a key of the dispatch metadata, JSON), "
        "`room:KEY` (a key of the room metadata, JSON) or `participant:ATTR` (a participant attribute, e.g. "
        "participant:sip.phoneNumber). Local calls (/simulate, chat --context, a test case) give it by name.")
    required: bool = Field(False, description="Refuse the call when the value is missing.")
    default: str | None = Field(None, description="Used when the value is missing.")
    pattern: Annotated[str, AfterValidator(regex_text)] | None = Field(
        None, description="A regular expression the whole value must match, else the call is refused.")
    max_length: int = Field(256, ge=1, le=65536, description="Longer values refuse the call.")
    secret: bool = Field(False, description="Redacted wherever secrets are (logs, status, reports).")

    @field_validator("from_")
    @classmethod
    def _source(cls, value: str) -> str:
        if not re.fullmatch(CONTEXT_SOURCE_PATTERN, value):
            raise PydanticCustomError(
                "context_source", "`from` must be dispatch:KEY (dispatch metadata), room:KEY (room metadata) or "
                "participant:ATTR (a participant attribute, e.g. participant:sip.phoneNumber)")
        return value

    @model_validator(mode="after")
    def _required_or_default(self) -> ContextValue:
        if self.required and self.default is not None:
            raise PydanticCustomError("context", "a value with a `default` is never missing: drop `required`")
        return self


class AgentSpecBase(StrictModel):
    """Fields every spec has; ``spec_model()`` adds the provider-dependent ones."""

    apiVersion: Literal["voice-runtime/v1"] = Field(description="Spec format version.")
    name: str | None = Field(
        None, pattern=AGENT_NAME_PATTERN, description="LiveKit agent name for explicit dispatch. Default: file stem."
    )
    instructions: str | None = Field(None, min_length=1, description="System prompt.")
    instructions_file: str | None = Field(None, min_length=1, description="System prompt file, relative to the spec.")
    greeting: str | None = Field(None, description="Said when a session starts.")
    mcp_servers: dict[Annotated[str, Field(pattern=SERVER_NAME_PATTERN)], McpServer] = Field(default_factory=dict)
    tools: list[Annotated[str, AfterValidator(_known_tool)]] = Field(
        default_factory=list, description="Tools registered by plugins, e.g. clock.now."
    )
    handoffs: list[Handoff] = Field(
        default_factory=list, description="Agents this one may hand the session to (a transfer_to_<agent> tool each)."
    )
    max_handoffs_per_turn: int = Field(
        3, ge=1, le=20,
        description="Handoffs one caller turn may go through: once this many have happened since the caller "
        "last spoke, this agent's transfer tools are refused and withheld until its answer, which it gives itself.")
    claims: Claims = Field(default_factory=Claims, description="Replies that claim a tool ran when none did.")
    reports: list[ReportTarget] = Field(
        default_factory=list, max_length=8,
        description="Where each call's report goes when it ends: [{webhook: {url, secret}}, {file: {dir}}]. "
        "Spooled durably first, delivered at least once.")
    report_tool_io: bool = Field(
        False, description="Put each tool call's arguments and result in the report (default: server, tool, "
        "outcome and latency only).")
    analysis: Analysis | None = Field(None, description="After the call, a model fills a JSON Schema from the transcript; the answer (or why there is none) goes into the report.")
    context: dict[Annotated[str, Field(pattern=CONTEXT_NAME_PATTERN)], ContextValue] = Field(
        default_factory=dict,
        description="What a call may carry (caller, account, per-call token), used as ${call.NAME} in instructions, "
        "greeting, MCP headers and url query, and pinned tool arguments.")
    telephony: Telephony | None = Field(None, description="Phone behaviour: end_call, transfer, dtmf, voicemail, ...")
    turn_handling: TurnHandling | None = Field(None, description="Endpointing, interruptions, preemptive generation.")
    background_audio: BackgroundAudio | None = Field(None, description="Ambient and thinking sounds.")
    instructions_from: InstructionsFrom | None = Field(None, description="Instructions from an MCP server's prompt at each call's start; `instructions` stay the fallback when the server is down.")
    context_resources: list[ContextResource] = Field(default_factory=list, max_length=MAX_RESOURCES, description="MCP resources read at each call's start, added to the instructions.")

    @field_validator("handoffs")
    @classmethod
    def _unique_handoffs(cls, value: list[Handoff]) -> list[Handoff]:
        names = [h.agent for h in value]
        if len(set(names)) != len(names):
            raise PydanticCustomError("duplicate_handoff", "an agent is listed twice under handoffs")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("duplicate_tool", "a tool is listed twice")
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> AgentSpecBase:
        if self.instructions and self.instructions_file:
            raise PydanticCustomError("instructions", "give `instructions` or `instructions_file`, not both")
        if not self.instructions and not self.instructions_file:
            raise PydanticCustomError("instructions", "an agent needs `instructions` or `instructions_file`")
        if getattr(self, "realtime", None) is None and getattr(self, "pipeline", None) is None:
            raise PydanticCustomError("mode", "an agent needs `realtime`, `pipeline`, or both (pipeline = fallback)")
        return self

    @property
    def mode(self) -> str:
        realtime, pipeline = getattr(self, "realtime", None), getattr(self, "pipeline", None)
        if realtime is not None and pipeline is not None:
            return "realtime+fallback"
        return "realtime" if realtime is not None else "pipeline"


class PipelineBase(StrictModel):
    turn_detection: TURN_DETECTION | None = Field(
        None, description="How the end of the user's turn is found. Default: livekit chooses."
    )
    text_only: bool = Field(False, description="No audio: stt and tts are not needed (chat, tests).")
    interrupt_after_ms: int | None = Field(
        None, ge=0, le=5000,
        description="Milliseconds the caller must speak over the agent to stop it (barge-in). "
        "Default: livekit's 500; the agent's audio stops about 50-100 ms after this.",
    )

    @model_validator(mode="after")
    def _needs_audio_ends(self) -> PipelineBase:
        if not self.text_only:
            missing = [k for k in ("stt", "tts") if getattr(self, k, None) is None]
            if missing:
                raise PydanticCustomError(
                    "pipeline_audio",
                    "a voice pipeline needs {missing} (or set text_only: true)",
                    {"missing": " and ".join(f"`{m}`" for m in missing)},
                )
        return self


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _is_secret(annotation: Any) -> bool:
    return annotation in (SecretStr, SecretBytes) or any(_is_secret(a) for a in get_args(annotation))


class _SecretLineEnds(BaseModel):
    """Every provider's secret fields (built-in or plugin): a key read from a mounted
    secret file ends in a line break, which no API accepts in a header. It is dropped."""

    @model_validator(mode="before")
    @classmethod
    def _strip_line_ends(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        secret = [name for name, f in cls.model_fields.items() if _is_secret(f.annotation)]
        return {k: mounted_secret(v) if k in secret and isinstance(v, str) else v for k, v in data.items()}


def _provider_union(registry: RegistryView, kind: str) -> Any:
    members = []
    for provider in registry.providers_of(kind):
        model = create_model(
            f"{kind.upper()}_{re.sub(r'[^A-Za-z0-9]', '_', provider.name)}",
            __base__=(provider.options, _SecretLineEnds),
            __doc__=f"{kind} provider {provider.name!r} (plugin {provider.plugin})",
            provider=(Literal[provider.name], Field(description=f"{kind} provider")),  # type: ignore[valid-type]
        )
        members.append(model)
    if not members:
        return None
    if len(members) == 1:
        return members[0]
    return Annotated[Union[tuple(members)], Field(discriminator="provider")]


def _one_or_many(member: Any) -> Any:
    return Annotated[
        list[member],  # type: ignore[valid-type]
        Field(min_length=1),
        BeforeValidator(_as_list, json_schema_input_type=Union[member, list[member]]),  # type: ignore[valid-type]
    ]


@lru_cache(maxsize=8)
def spec_model(registry: RegistryView) -> type[AgentSpecBase]:
    """The AgentSpec model for the providers this registry knows."""
    unions = {kind: _provider_union(registry, kind) for kind in ("stt", "llm", "tts", "vad", "realtime")}

    def optional(tp: Any, desc: str) -> Any:
        return (tp | None, Field(None, description=desc)) if tp is not None else (None, Field(None, description=desc))

    pipeline_fields: dict[str, Any] = {
        "stt": optional(_one_or_many(unions["stt"]) if unions["stt"] else None, "Speech-to-text; a list is a fallback chain."),
        "tts": optional(_one_or_many(unions["tts"]) if unions["tts"] else None, "Text-to-speech; a list is a fallback chain."),
        "vad": optional(unions["vad"], "Voice activity detection."),
    }
    if unions["llm"] is not None:
        pipeline_fields["llm"] = (_one_or_many(unions["llm"]), Field(description="LLM; a list is a fallback chain."))
    else:
        pipeline_fields["llm"] = (None, Field(None))
    pipeline = create_model("Pipeline", __base__=PipelineBase, **pipeline_fields)
    from .claims_judge import claims_model

    claims = claims_model(Claims, StrictModel, _one_or_many(unions["llm"]) if unions["llm"] else None)
    return create_model(
        "AgentSpec",
        __base__=AgentSpecBase,
        claims=(claims, Field(default_factory=claims, description="Replies that claim a tool ran when none did.")),
        realtime=optional(unions["realtime"], "Speech-to-speech model."),
        pipeline=(pipeline | None, Field(None, description="STT -> LLM -> TTS; with realtime, its fallback.")),
    )


AgentSpec = AgentSpecBase  # the type to annotate with; instances come from spec_model()
