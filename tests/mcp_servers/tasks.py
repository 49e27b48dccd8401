"""A hand-rolled stdio MCP server (raw JSON-RPC, no SDK) that runs tools as MCP tasks
(protocol 2025-11-25) and logs through ``notifications/message``, recording every
task request it gets, so a test can see what reached the server.

Run: ``python tasks.py --record FILE [--no-tasks-capability]``.

Tools:
* ``research {topic, seconds}`` (``execution.taskSupport: required``): a task that
  works for ``seconds`` (default 2), its status message ``Step N of M`` changing every
  0.3 s, then completes with ``findings on TOPIC``.
* ``chatty {count, secret}``: sends ``count`` ``notifications/message`` (levels
  cycling debug/info/warning/error, each naming ``secret``), then answers ``said N``.

Every ``tools/call``, ``tasks/get``, ``tasks/result`` and ``tasks/cancel`` appends
``{"method", "task", "tool"?, "status"?}`` to ``--record``. The task's state is
computed from the time at each request: a single thread, as stdio serves one line
at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STEP_S = 0.3
LEVELS = ["debug", "info", "warning", "error"]


class Task:
    def __init__(self, tid: str, topic: str, seconds: float) -> None:
        self.tid, self.topic, self.seconds = tid, topic, seconds
        self.started = time.monotonic()
        self.cancelled = False
        self.created = datetime.now(timezone.utc).isoformat()

    def state(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        steps = max(1, int(self.seconds / STEP_S))
        if self.cancelled:
            status, message = "cancelled", "cancelled by the client"
        elif elapsed >= self.seconds:
            status, message = "completed", "done"
        else:
            status, message = "working", f"Step {min(steps, int(elapsed / STEP_S) + 1)} of {steps}"
        return {"taskId": self.tid, "status": status, "statusMessage": message, "createdAt": self.created,
                "lastUpdatedAt": datetime.now(timezone.utc).isoformat(), "ttl": 60000, "pollInterval": 200}


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--no-tasks-capability", action="store_true")
    ns = parser.parse_args()
    tasks: dict[str, Task] = {}

    def record(**entry: Any) -> None:
        with ns.record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    capabilities: dict[str, Any] = {"tools": {}, "logging": {}}
    if not ns.no_tasks_capability:
        capabilities["tasks"] = {"cancel": {}, "requests": {"tools": {"call": {}}}}
    tools = [
        {"name": "research", "description": "Research a topic (runs as a task).",
         "inputSchema": {"type": "object", "properties": {"topic": {"type": "string"}, "seconds": {"type": "number"}},
                         "required": ["topic"]},
         "execution": {"taskSupport": "required"}},
        {"name": "chatty", "description": "Log some messages.",
         "inputSchema": {"type": "object", "properties": {"count": {"type": "integer"}, "secret": {"type": "string"}}}},
    ]
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        method, rid, params = request.get("method"), request.get("id"), request.get("params") or {}
        if rid is None:
            continue  # a notification
        if method == "initialize":
            send({"id": rid, "result": {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                                        "capabilities": capabilities, "serverInfo": {"name": "tasks", "version": "1"}}})
        elif method == "tools/list":
            send({"id": rid, "result": {"tools": tools}})
        elif method == "tools/call" and params.get("name") == "research":
            args = params.get("arguments") or {}
            if "task" not in params:
                record(method="tools/call", tool="research", task=None)
                send({"id": rid, "error": {"code": -32600, "message": "research must be called as a task"}})
                continue
            task = Task(f"t{len(tasks) + 1}", str(args.get("topic", "")), float(args.get("seconds", 2)))
            tasks[task.tid] = task
            record(method="tools/call", tool="research", task=task.tid)
            send({"id": rid, "result": {"task": task.state()}})
        elif method == "tools/call" and params.get("name") == "chatty":
            args = params.get("arguments") or {}
            count = int(args.get("count", 1))
            for i in range(count):
                send({"method": "notifications/message", "params": {
                    "level": LEVELS[i % len(LEVELS)], "logger": "chatty",
                    "data": f"message {i} about {args.get('secret', '')}"}})
            send({"id": rid, "result": {"content": [{"type": "text", "text": f"said {count}"}]}})
        elif method in ("tasks/get", "tasks/result", "tasks/cancel"):
            task = tasks.get(params.get("taskId", ""))
            if task is None:
                send({"id": rid, "error": {"code": -32602, "message": "no such task"}})
                continue
            if method == "tasks/cancel":
                task.cancelled = True
            if method == "tasks/result":
                while task.state()["status"] == "working":
                    time.sleep(0.05)
            state = task.state()
            record(method=method, task=task.tid, status=state["status"])
            if method == "tasks/result":
                send({"id": rid, "result": {"content": [{"type": "text", "text": f"findings on {task.topic}"}],
                                            "_meta": {"io.modelcontextprotocol/related-task": {"taskId": task.tid}}}})
            else:
                send({"id": rid, "result": state})
        elif method == "ping":
            send({"id": rid, "result": {}})
        else:
            send({"id": rid, "error": {"code": -32601, "message": f"unknown method {method}"}})


if __name__ == "__main__":
    main()
