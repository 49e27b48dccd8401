"""A hand-rolled stdio MCP server whose ``tools/list`` is whatever a test asks for,
written as raw JSON: an SDK server cannot even serialize a schema 10,000 levels
deep, which is what a hostile or buggy server sends.

Run: ``python raw_listing.py [--record FILE] [--deep N] [--scalar-schema]
[--huge-mb N] [--many N] [--task-required] [--stderr-text TEXT]``.

It always lists ``echo`` (``{"text": str}``, answers the text) and, per option:
``deep`` (an inputSchema N objects deep), ``scalar`` (an inputSchema that is a
string), ``huge`` (a description of N MB), ``bulk_00000``... (N more tools) and
``research`` (``execution.taskSupport: required``: a plain call is refused, as
server-everything's ``simulate-research-query`` does). Each ``tools/call``
appends ``{"tool", "args"}`` to ``--record``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorder import Recorder  # noqa: E402

TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def deep_schema(levels: int) -> str:
    """Raw JSON: ``levels`` nested objects (json.dumps would recurse too deep)."""
    return '{"type":"object","properties":{"a":' * levels + '{"type":"string"}' + "}}" * levels


def tools_json(ns: argparse.Namespace) -> str:
    tools: list[str] = [json.dumps({"name": "echo", "description": "Return the text.", "inputSchema": TEXT_SCHEMA})]
    if ns.deep:
        tools.append('{"name":"deep","description":"A tool with a deep schema.","inputSchema":'
                     + deep_schema(ns.deep) + "}")
    if ns.scalar_schema:
        tools.append(json.dumps({"name": "scalar", "description": "Schema is a string.", "inputSchema": "string"}))
    if ns.huge_mb:
        tools.append(json.dumps({"name": "huge", "description": "x" * (ns.huge_mb * 1024 * 1024),
                                 "inputSchema": TEXT_SCHEMA}))
    if ns.task_required:
        tools.append(json.dumps({"name": "research", "description": "Research a query (runs as a task).",
                                 "inputSchema": TEXT_SCHEMA, "execution": {"taskSupport": "required"}}))
    bulk = ('{"name":"bulk_%05d","inputSchema":{"type":"object"}}' % i for i in range(ns.many))
    return "[" + ",".join([*tools, *bulk]) + "]"


def reply(rid: Any, result: str | None = None, error: dict[str, Any] | None = None) -> None:
    body = f'"error":{json.dumps(error)}' if error is not None else f'"result":{result}'
    sys.stdout.write(f'{{"jsonrpc":"2.0","id":{json.dumps(rid)},{body}}}\n')
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path)
    parser.add_argument("--deep", type=int, default=0)
    parser.add_argument("--scalar-schema", action="store_true")
    parser.add_argument("--huge-mb", type=int, default=0)
    parser.add_argument("--many", type=int, default=0)
    parser.add_argument("--task-required", action="store_true")
    ns = parser.parse_args()
    rec = Recorder(ns.record)
    listing = tools_json(ns)
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        method, rid, params = request.get("method"), request.get("id"), request.get("params") or {}
        if rid is None:
            continue  # a notification
        if method == "initialize":
            reply(rid, json.dumps({"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                                   "capabilities": {"tools": {}}, "serverInfo": {"name": "raw", "version": "1"}}))
        elif method == "tools/list":
            reply(rid, '{"tools":' + listing + "}")
        elif method == "tools/call":
            name, args = params.get("name"), params.get("arguments") or {}
            rec.call(name, **args)
            if name == "research":
                reply(rid, error={"code": -32601, "message": "research must be called as a task"})
            else:
                reply(rid, json.dumps({"content": [{"type": "text", "text": str(args.get("text", ""))}]}))
        elif method == "ping":
            reply(rid, "{}")
        else:
            reply(rid, error={"code": -32601, "message": f"unknown method {method}"})


if __name__ == "__main__":
    main()
