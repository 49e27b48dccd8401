"""GET / on the operator port: the /status document as one HTML page for people.

Plain server-rendered HTML: no script, no external asset (the operator port is
often reached through a port-forward or from a locked-down network), refreshed
by ``<meta http-equiv="refresh">``. Every value is HTML-escaped; the document it
renders has been through the operator's ``SecretSet`` already.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from ..mcp.oauth import describe_auth

REFRESH_S = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}code{font:12px ui-monospace,monospace}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#a15c00;font-weight:600}
.muted{color:#666}ul{margin:0;padding-left:1.2em}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def _state(state: str) -> str:
    cls = {"up": "ok", "down": "bad", "closed": "bad"}.get(state, "warn")
    return f'<span class="{cls}">{_e(state)}</span>'


def _agents(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return '<p class="muted">No agent is loaded.</p>'
    rows = []
    for a in agents:
        providers = "".join(f"<li>{_e(kind)}: {_e(label)}</li>" for kind, label in a["providers"].items())
        registered = (f'<span class="warn">draining</span> ({_e(a["sessions_active"])} call(s) in progress; '
                      'takes no new call)' if a["draining"]
                      else '<span class="ok">registered</span>' if a["registered"]
                      else '<span class="ok">ready</span> (not registered with LiveKit: local mode or --unregistered)'
                      if a.get("ready")
                      else f'<span class="bad">not registered</span> {_e(a.get("error") or "")}')
        rows.append(
            f'<tr id="agent-{_e(a["name"])}"><td><b>{_e(a["name"])}</b> <a href="/talk/{_e(a["name"])}">talk</a>'
            f'<br><code>{_e(a["file"])}</code></td>'
            f'<td>{_e(a["generation"])}</td><td>{_e(a["mode"])}</td><td><ul>{providers}</ul></td>'
            f'<td>{_e(a["sessions_active"])}</td><td>{registered}</td></tr>')
    return ("<table><thead><tr><th>agent</th><th>generation</th><th>mode</th><th>providers</th>"
            "<th>sessions</th><th>state</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _servers(agents: list[dict[str, Any]]) -> str:
    rows = []
    for a in agents:
        for name, s in a["mcp_servers"].items():
            tools = ", ".join(_e(t) for t in s.get("tools") or []) or '<span class="muted">-</span>'
            rows.append(
                f'<tr class="mcp-{_e(s["state"])}"><td>{_e(a["name"])}</td><td>{_e(name)}</td>'
                f'<td>{_e(s["transport"])}</td><td>{_state(s["state"])}{" (required)" if s.get("required") else ""}</td>'
                f'<td>{_e(s.get("error") or "")}</td><td>{tools}</td><td>{_e(describe_auth(s.get("auth")))}</td></tr>')
    if not rows:
        return '<p class="muted">No agent uses an MCP server.</p>'
    return ("<table><thead><tr><th>agent</th><th>server</th><th>transport</th><th>state</th>"
            "<th>last error</th><th>tools</th><th>auth</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _calls(calls: list[dict[str, Any]]) -> str:
    if not calls:
        return '<p class="muted">No tool call yet.</p>'
    rows = []
    for c in calls:
        cls = "ok" if c.get("outcome") == "ok" else "bad"
        rows.append(
            f'<tr><td>{_e(_when(c.get("started_at")))}</td><td>{_e(c.get("agent"))}</td>'
            f'<td>{_e(c.get("server"))}</td><td>{_e(c.get("tool"))}</td>'
            f'<td><span class="{cls}">{_e(c.get("outcome"))}</span> {_e(c.get("error") or "")}</td>'
            f'<td>{_e(c.get("latency_ms"))} ms</td></tr>')
    return ("<table><thead><tr><th>time</th><th>agent</th><th>server</th><th>tool</th><th>outcome</th>"
            "<th>latency</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _questions(questions: list[dict[str, Any]]) -> str:
    if not questions:
        return '<p class="muted">No server is waiting for a caller\'s answer.</p>'
    rows = [f'<tr><td>{_e(_when(q.get("asked_at")))}</td><td>{_e(q.get("agent"))}</td>'
            f'<td>{_e(q.get("session_id"))}</td><td>{_e(q.get("server"))}</td>'
            f'<td>{_e(", ".join(q.get("fields") or []))}</td></tr>' for q in questions]
    return ("<table><thead><tr><th>asked</th><th>agent</th><th>call</th><th>server</th><th>fields</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _reload(last: dict[str, Any] | None, plugin_errors: list[str]) -> str:
    if last is None:
        return '<p class="muted">The specs are still being loaded.</p>'
    ok = last["ok"] and not plugin_errors
    head = (f'<p>{_when(last["timestamp"])}: generation {_e(last["generation"])}, '
            f'<span class="{"ok" if ok else "bad"}">{_e(last["outcome"])}</span>')
    for what in ("added", "updated", "removed"):
        if last.get(what):
            head += f"; {what} {_e(', '.join(last[what]))}"
    head += "</p>"
    problems = [e["text"] for e in last.get("errors", [])] + list(plugin_errors)
    if last.get("refused"):
        problems.append(str(last["refused"]))
    if not problems:
        return head
    return head + '<ul class="errors">' + "".join(f"<li><code>{_e(p)}</code></li>" for p in problems) + "</ul>"


def _reports(backlog: dict[str, Any] | None) -> str:
    """The delivery backlog: a growing pending count or any dead letter needs a look."""
    if backlog is None:
        return '<p class="muted">no report spool</p>'
    pending = f'<span class="{"bad" if backlog["pending"] else "ok"}">{_e(backlog["pending"])} pending</span>'
    if backlog.get("oldest_pending_at"):
        pending += f' (oldest {_when(backlog["oldest_pending_at"])})'
    dead = f'<span class="{"bad" if backlog["dead"] else "ok"}">{_e(backlog["dead"])} dead-lettered</span>'
    return (f'<p id="reports">{pending} &middot; {dead} &middot; {_e(backlog["calls_running"])} call(s) running '
            f'&middot; <span class="muted">spool <code>{_e(backlog["spool"])}</code></span></p>')


def render(status: dict[str, Any]) -> str:
    """The page for a /status document (redacted already)."""
    agents, calls = status["agents"], status.get("tool_calls", [])
    ready = ('<span class="ok">ready</span>' if status["ready"]
             else '<span class="bad">not ready</span><ul>' + "".join(f"<li>{_e(r)}</li>" for r in status["not_ready"])
             + "</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voice-runtime status</title><style>{_STYLE}</style></head>
<body>
<h1>voice-runtime</h1>
<p>{ready} &middot; generation {_e(status["generation"])} &middot; pid {_e(status["pid"])}
&middot; <span class="muted">{_when(time.time())}, refreshes every {REFRESH_S} s &middot;
<a href="/status">/status</a> <a href="/metrics">/metrics</a></span></p>
<h2>Agents</h2>
{_agents(agents)}
<h2>MCP servers</h2>
{_servers(agents)}
<h2>Last reload</h2>
{_reload(status["last_reload"], status["plugin_errors"])}
<h2>Call reports</h2>
{_reports(status.get("reports"))}
<h2>Server questions waiting for a caller <span class="muted">(MCP elicitation)</span></h2>
{_questions(status.get("pending_questions", []))}
<h2>Recent tool calls <span class="muted">(newest first, last {len(calls)})</span></h2>
{_calls(calls)}
</body></html>
"""
