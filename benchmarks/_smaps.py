"""Where a process tree's memory is: /proc/PID/smaps summed by role and by kind of mapping.

Not a benchmark itself (the leading underscore keeps it out of ``benchmarks/*.py`` runs):
``concurrent_calls.py --smaps`` adds it to each point, so a change to memory per call can
be traced to the mappings it moved (a job's heap, glibc's thread arenas, onnxruntime,
the shared libraries) and to the process that holds them (serve, the forkserver, a job,
an MCP server).

Per role and mapping kind: ``pss`` (what the tree is charged: a shared page divided
among every process on the machine mapping it), ``private_dirty`` (pages written by
this process alone: what a copy-on-write child has copied), ``shared`` (clean and dirty
pages another process maps too), in MiB; ``processes`` per role.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

FIELDS = {"Pss:": "pss", "Private_Dirty:": "private_dirty", "Shared_Clean:": "shared", "Shared_Dirty:": "shared"}


def kind(name: str) -> str:
    """The kind of a mapping, from its smaps pathname."""
    if not name:
        return "anon"  # mmap'd memory: glibc's thread arenas, large mallocs, numpy buffers
    if name.startswith("["):
        return name.strip("[]").split(":")[0]  # heap, stack, vdso, anon:...
    base = os.path.basename(name)
    if "onnxruntime" in name:
        return "onnxruntime"
    if base.startswith("libpython") or "/bin/python" in name:
        return "python"
    if ".so" in base:
        return "other .so"
    if base.endswith(".onnx"):
        return "onnx model"
    return "other files"


def mappings(pid: int) -> dict[str, dict[str, float]]:
    """{kind: {pss, private_dirty, shared}} in KiB for one process (empty if it is gone)."""
    out: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):  # a mapping's header: "start-end perms offset dev inode [path]"
                    parts = line.split(None, 5)
                    name = parts[5].strip() if len(parts) > 5 else ""
                    current = out.setdefault(kind(name), {"pss": 0.0, "private_dirty": 0.0, "shared": 0.0})
                elif current is not None and head in FIELDS:
                    current[FIELDS[head]] += int(line.split()[1])
    except OSError:
        return {}
    return out


def role(proc: psutil.Process, root: int, forkservers: set[int]) -> str:
    if proc.pid == root:
        return "main"
    if proc.pid in forkservers:
        return "forkserver"
    try:
        if proc.ppid() in forkservers:
            return "job"
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    return "mcp" if "mcp" in cmdline else "other"


def breakdown(root: int) -> dict[str, Any]:
    """The tree under ``root`` by role, each with its mappings by kind (MiB)."""
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return {}
    forkservers = set()
    for proc in procs:
        try:
            if "forkserver" in " ".join(proc.cmdline()):
                forkservers.add(proc.pid)
        except psutil.Error:
            pass
    # livekit's forkserver forks its job processes, which inherit its command line: the
    # forkserver is the one whose parent is not one of them
    forkservers = {q.pid for q in procs if q.pid in forkservers and _ppid(q) not in forkservers}
    roles: dict[str, dict[str, Any]] = {}
    for proc in procs:
        entry = roles.setdefault(role(proc, root, forkservers), {"processes": 0, "mappings": {}})
        entry["processes"] += 1
        for name, values in mappings(proc.pid).items():
            into = entry["mappings"].setdefault(name, {"pss": 0.0, "private_dirty": 0.0, "shared": 0.0})
            for key, kib in values.items():
                into[key] += kib / 1024
    for entry in roles.values():
        kept = {k: {f: round(v, 1) for f, v in m.items()} for k, m in entry["mappings"].items() if m["pss"] >= 0.5}
        entry["mappings"] = dict(sorted(kept.items(), key=lambda kv: -kv[1]["pss"]))
        entry["pss"] = round(sum(m["pss"] for m in kept.values()), 1)
    return roles


def _ppid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None
