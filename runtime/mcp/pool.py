"""Warm MCP connections shared by the sessions of a process.

A caller should not wait for MCP handshakes: the pool connects a spec's servers
before a session needs them (``warm``), sessions take the live connections
(``acquire``), and a new spec generation re-warms only the servers whose
configuration changed (``retain``). Connections are keyed by everything that
defines them, so two agents with the same server block share one connection
and an edited block gets a fresh one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..spec.secrets import SecretSet
from . import pins
from .connection import ConnState, McpConnection, McpUnavailable

if TYPE_CHECKING:
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.mcp")

START_SLOTS = max(4, 2 * (os.cpu_count() or 1))  # servers connecting for the first time at once


def listed_tools(connections: dict[str, McpConnection]) -> dict[str, list[Any] | None]:
    """What each server lists now, as ``pins.write_tool_lock`` takes it: None for a
    server that is down (it keeps what the previous lock approved for it)."""
    return {name: conn.tools if conn.state is ConnState.UP else None for name, conn in connections.items()}


def server_key(loaded: LoadedSpec, name: str) -> str:
    server = loaded.spec.mcp_servers[name]
    # the base dir matters: relative commands and cwd resolve against the spec's folder
    text = f"{loaded.path.parent}\0{name}\0{server.model_dump_json()}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Acquired:
    connections: dict[str, McpConnection]
    unavailable: dict[str, str] = field(default_factory=dict)  # server -> why
    # the spec's tool lock (server -> tool -> digest), None without one: applied per
    # agent, since agents with identical server blocks share a connection
    lock: dict[str, dict[str, str]] | None = None
    # connections of `shared: false` blocks, made for this caller alone: it closes them
    owned: list[McpConnection] = field(default_factory=list)


class McpPool:
    def __init__(self, *, retry_in_background: bool = True) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # connections live in one loop
        self._connections: dict[str, McpConnection] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        # `shared: false` connections handed out: the caller closes each; held weakly, so
        # a pool that lives as long as serve (thread executor) does not keep every call's
        self._owned: weakref.WeakSet[McpConnection] = weakref.WeakSet()
        self._keys: dict[int, tuple[LoadedSpec, tuple[str, ...]]] = {}  # id(spec) -> (spec, its shared keys)
        self._wanted: set[str] | None = None  # the keys the last retain() was asked for
        self._retaining: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None  # first connects running at once
        # blocks lent to calls now (the gateway's leases): retain() keeps those open
        self._leases: Counter[str] = Counter()
        self.retry_in_background = retry_in_background

    async def acquire(self, loaded: LoadedSpec, only: set[str] | None = None) -> Acquired:
        """The spec's servers (or ``only`` these), connecting those not yet in the
        pool (concurrently, each within its connect_timeout). A ``shared: false``
        block is never pooled: each acquire connects its own, which the caller
        closes (``Acquired.owned``). A server that is down is reported, not raised:
        the caller decides whether that refuses the session. Callable from any
        loop: the work runs in the pool's own."""
        running = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop = running
        if self._loop is not running:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.acquire(loaded, only), self._loop))
        servers = {n: s for n, s in loaded.spec.mcp_servers.items() if only is None or n in only}
        keys = {name: server_key(loaded, name) for name, server in servers.items() if server.pooled}
        pooled: dict[str, McpConnection] = {}  # held here: a retain() meanwhile may drop the key
        for name, key in keys.items():
            conn = self._connections.get(key)
            if conn is None:
                self._connections[key] = conn = self._new(loaded, name)
                self._starting[key] = asyncio.ensure_future(self._start(conn))
            pooled[name] = conn
        owned = {name: self._new(loaded, name) for name, server in servers.items() if not server.pooled}
        self._owned.update(owned.values())
        pending = [self._starting[k] for k in keys.values() if k in self._starting]
        pending += [asyncio.ensure_future(self._start(conn)) for conn in owned.values()]
        if pending:
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)
        connections = {name: owned[name] if name in owned else pooled[name] for name in servers}
        acquired = Acquired(connections, lock=pins.read_tool_lock(loaded) if servers else None,
                            owned=list(owned.values()))
        for name, conn in acquired.connections.items():
            if conn.state is not ConnState.UP:
                acquired.unavailable[name] = conn.error or conn.state.value
        return acquired

    async def started(self, keys: Iterable[str]) -> None:
        """Wait until these pooled connections have finished connecting (or failed)."""
        pending = [self._starting[k] for k in keys if k in self._starting]
        if pending:
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)

    def _new(self, loaded: LoadedSpec, name: str) -> McpConnection:
        return McpConnection(name, loaded.spec.mcp_servers[name], base_dir=loaded.path.parent,
                             redact=SecretSet.of([loaded]).redact)

    async def _start(self, conn: McpConnection) -> None:
        # a few at a time: 100 stdio servers started at once (each a Python process
        # importing its SDK) took minutes of CPU on 2 cores, and every one of them ran
        # past its connect_timeout, failed and was retried, over and over
        self._slots = self._slots or asyncio.Semaphore(START_SLOTS)
        try:
            async with self._slots:
                await (conn.start() if self.retry_in_background else conn.connect())
        except McpUnavailable:
            pass  # state and error are on the connection
        finally:
            current = asyncio.current_task()
            self._starting = {k: t for k, t in self._starting.items() if t is not current and not t.done()}

    async def warm(self, specs: Iterable[LoadedSpec]) -> None:
        """Connect the shared server blocks of these specs (``shared: false`` ones
        are connected per call, never ahead)."""
        await asyncio.gather(*(self.acquire(s, only=_shared(s)) for s in specs))

    async def retain(self, specs: Iterable[LoadedSpec]) -> None:
        """Make the pool hold exactly the shared servers of ``specs``: close the
        others, connect the new ones, keep the unchanged ones as they are. With
        1,000 specs this runs on every reload, so each spec's keys are computed once
        per accepted version and a spec whose servers are all held is not visited."""
        self._retaining = self._retaining or asyncio.Lock()
        async with self._retaining:  # reloads come faster than connections close: one retain at a time
            keyed = [(s, self._shared_keys(s)) for s in specs]
            self._wanted = {key for _, keys in keyed for key in keys}
            # a block still lent to a call of an older generation stays until that call ends
            # (``release``): closing it would cut the call's tools mid-conversation
            await self._close([k for k in self._connections if k not in self._wanted and k not in self._leases])
            await self.warm(s for s, keys in keyed if any(k not in self._connections for k in keys))

    def lend(self, key: str) -> None:
        """A call borrows this block (through the gateway) until ``release``."""
        self._leases[key] += 1

    async def release(self, key: str) -> None:
        """A call that borrowed this block ended: close it if no spec wants it any more."""
        self._leases[key] -= 1
        if self._leases[key] > 0:
            return
        del self._leases[key]
        if self._wanted is not None and key not in self._wanted:
            await self._close([key])

    async def _close(self, stale: list[str]) -> None:
        closing = [self._connections.pop(k) for k in stale if k in self._connections]
        for key in stale:
            task = self._starting.pop(key, None)
            if task is not None:
                task.cancel()
        if closing:
            log.info("closing %d MCP connection(s) no spec uses any more", len(closing))
        await asyncio.gather(*(c.aclose() for c in closing), return_exceptions=True)

    def _shared_keys(self, loaded: LoadedSpec) -> tuple[str, ...]:
        cached = self._keys.get(id(loaded))
        if cached is None or cached[0] is not loaded:
            if len(self._keys) > 4 * 4096:
                self._keys.clear()
            cached = self._keys[id(loaded)] = (loaded, tuple(server_key(loaded, n) for n in sorted(_shared(loaded))))
        return cached[1]

    def by_key(self) -> dict[str, McpConnection]:
        return dict(self._connections)

    def connection(self, key: str) -> McpConnection | None:
        """The pooled connection of this block, if held (no copy: a tool call asks)."""
        return self._connections.get(key)

    async def aclose(self) -> None:
        for task in self._starting.values():
            task.cancel()
        conns, self._connections = list(self._connections.values()) + list(self._owned), {}
        self._owned = weakref.WeakSet()
        await asyncio.gather(*(c.aclose() for c in conns), return_exceptions=True)


def _shared(loaded: LoadedSpec) -> set[str]:
    return {name for name, server in loaded.spec.mcp_servers.items() if server.pooled}
