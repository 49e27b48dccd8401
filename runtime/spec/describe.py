"""What a loaded spec will run, in words: used by `check`, `/status` and logs.

Values that came from ``${VAR}`` are shown as written, never expanded (which
values are secret, and the one ``redact``, live in ``secrets``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loader import LoadedSpec


def _provider_label(loaded: LoadedSpec, keys: list[str], options: Any) -> str:
    """``provider/model``, showing the ``${VAR}`` text of a value that came from one."""

    def shown(field: str, value: Any) -> Any:
        for key in keys:
            if f"{key}.{field}" in loaded.templates:
                return loaded.templates[f"{key}.{field}"]
        return value

    provider, model = shown("provider", options.provider), shown("model", getattr(options, "model", None))
    return f"{provider}/{model}" if model else provider


def providers(loaded: LoadedSpec) -> dict[str, str]:
    """``{"realtime": "openai/gpt-realtime", "llm": "openai/gpt-4.1-mini > openai/gpt-4o-mini", ...}``"""
    spec: Any = loaded.spec
    out: dict[str, str] = {}
    if spec.realtime is not None:
        out["realtime"] = _provider_label(loaded, ["realtime"], spec.realtime)
    pipeline = spec.pipeline
    if pipeline is not None:
        for kind in ("stt", "llm", "tts", "vad"):
            value = getattr(pipeline, kind, None)
            if value is None:
                continue
            chain = value if isinstance(value, list) else [value]
            # a single mapping in the file is pipeline.<kind>; a list is pipeline.<kind>[i]
            out[kind] = " > ".join(
                _provider_label(loaded, [f"pipeline.{kind}[{i}]", *([f"pipeline.{kind}"] if i == 0 else [])], v)
                for i, v in enumerate(chain)
            )
    return out


def mcp_servers(loaded: LoadedSpec) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, server in loaded.spec.mcp_servers.items():
        if hasattr(server, "command"):
            target = loaded.templates.get(f"mcp_servers.{name}.command", server.command)
            out[name] = {"transport": "stdio", "target": target, "required": server.required}
        else:
            target = loaded.templates.get(f"mcp_servers.{name}.url", server.url)
            out[name] = {"transport": server.resolved_transport, "target": target, "required": server.required}
        # what the server may ask of us (each announced as an MCP capability only when allowed)
        out[name]["allows"] = allows(server)
    return out


def allows(server: Any) -> list[str]:
    """What a server block lets the server ask of a call (each announced only when allowed)."""
    return [kind for kind, on in (("elicitation", server.elicitation == "allow"),
                                  ("sampling", server.sampling.allow),
                                  ("roots", bool(server.roots))) if on]


def describe(loaded: LoadedSpec) -> dict[str, Any]:
    return {
        "name": loaded.name,
        "file": str(loaded.path),
        "mode": loaded.spec.mode,
        "providers": providers(loaded),
        "mcp_servers": mcp_servers(loaded),
        "tools": list(loaded.spec.tools),
        "handoffs": [{"agent": h.agent, "history": h.history} for h in loaded.spec.handoffs],
        "digest": loaded.digest,
    }
