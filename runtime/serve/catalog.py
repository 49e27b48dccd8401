"""The accepted specs of a folder: last good version per file, generations, and an
atomic swap from one state to the next.

A reload reads the folder again but re-parses only files whose bytes may have
changed (stat: inode, size, mtime, for the spec and its instructions file), so its
cost follows the edit, not the size of the folder. A file that fails keeps its
last good version serving; a folder that vanishes or empties all at once is
refused (a broken mount or a bad sync must not unregister every agent).

Accepted generations are published as JSON files in a private state directory:
job processes (forkserver children) read exactly what the parent accepted at the
moment they start, never a half-written or invalid spec file. The files hold the
expanded values, secret fields (``api_key``) included, as the job needs them to
authenticate: the directory is 0700, each file 0600, and serve removes it on exit.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.filesystem import write_private_json
from ..spec.secrets import SecretSet, reveal
from ..spec.errors import SpecError
from ..spec.loader import EMPTY_FOLDER, LoadedSpec, SpecLoader, discover, handoff_problems

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..plugins.manager import Plugins

log = logging.getLogger("voice_runtime.reload")

Stamp = tuple[Any, ...]
RACY_NS = 2_000_000_000  # coarse filesystems (FAT, old kernels, some NFS) tick this slowly


@dataclass(frozen=True)
class Entry:
    """One agent being served."""

    loaded: LoadedSpec
    generation: int  # the reload that accepted this version
    accepted_at: float


class Outcome(enum.Enum):
    """What a reload did, in one word. Whoever noticed the change (the watcher, the
    periodic scan, a signal), the supervisor logs and counts a reload by this alone."""

    NOOP = "noop"  # nothing is new: the same versions served, the same problems as last time
    APPLIED = "applied"  # every file is served as it is now (also: a failing file fixed)
    REJECTED = "rejected"  # some files keep their last good version; the rest is applied
    REFUSED = "refused"  # the whole reload was refused; nothing changed


@dataclass
class ReloadResult:
    generation: int
    timestamp: float
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    refused: str | None = None  # why the whole reload was refused
    outcome: Outcome = Outcome.NOOP  # set by the catalog when the reload is finished

    @property
    def ok(self) -> bool:
        return not self.errors and self.refused is None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in
                 (("added", self.added), ("updated", self.updated), ("removed", self.removed)) if names]
        if self.refused:
            parts.append(f"refused: {self.refused}")
        if self.errors:
            files = sorted({e.file for e in self.errors})
            # generation 0: nothing was ever served, so there is no good version to keep
            kept = "not served" if self.generation == 0 else "last good version kept"
            parts.append(f"{len(self.errors)} error(s) in {', '.join(files)} ({kept})")
        return "; ".join(parts) or "no change"

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation, "timestamp": self.timestamp, "ok": self.ok,
            "outcome": self.outcome.value,
            "added": self.added, "updated": self.updated, "removed": self.removed,
            "errors": [e.as_dict() | {"text": str(e)} for e in self.errors], "refused": self.refused,
        }


def _stat(path: Path) -> Stamp | None:
    try:
        st = path.stat()  # follows symlinks: a ConfigMap `..data` swap changes the inode
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Catalog:
    def __init__(self, folder: Path, plugins: Plugins, state_dir: Path | None = None,
                 secrets: SecretSet | None = None) -> None:
        self.folder = folder
        self.plugins = plugins
        # every accepted spec's secrets go here, for the log formatter and /status to redact
        self.secrets = secrets if secrets is not None else SecretSet()
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="voice-runtime-"))
        # published specs hold expanded ${VAR} values and api keys: owner only
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        (self.state_dir / "agents").mkdir(mode=0o700, parents=True, exist_ok=True)
        self.agents: dict[str, Entry] = {}
        self.generation = 0
        self.last: ReloadResult | None = None
        self.last_success_at: float | None = None
        # path -> (stamp, result, read at ns): what each file gave the last time it was read
        self._files: dict[Path, tuple[Stamp, LoadedSpec | list[SpecError], int]] = {}
        self._file_of: dict[str, Path] = {}  # agent name -> the file it came from
        self._stat_memo: dict[str, Stamp | None] = {}  # instructions files stat'ed in this reload
        # serve --require-tests (testing/gate.py): (specs, changed names, plugins) -> why each
        # changed agent may not be served; such an agent is rejected like an invalid spec
        self.gate: Callable[[dict[str, LoadedSpec], set[str], Plugins], dict[str, list[str]]] | None = None

    def use_plugins(self, plugins: Plugins) -> None:
        """New plugin code: every file is validated again on the next reload."""
        self.plugins = plugins
        self._files.clear()

    def _stamp(self, path: Path, previous: LoadedSpec | list[SpecError] | None) -> Stamp | None:
        stamp = _stat(path)
        if stamp is None:
            return None
        instructions_file = getattr(getattr(previous, "spec", None), "instructions_file", None)
        if instructions_file:
            shared = self._stat_memo  # many specs often share one prompt file: one stat per reload
            target = os.path.join(path.parent, instructions_file)
            if target not in shared:
                shared[target] = _stat(Path(target))
            stamp += (shared[target],)
        return stamp

    def _trusted(self, path: Path) -> LoadedSpec | None:
        """The cached result for ``path`` if the file cannot have changed since."""
        cached = self._files.get(path)
        if cached is None or not isinstance(cached[1], LoadedSpec):
            return None  # errors are re-read: a missing instructions file may have appeared
        stamp, result, read_at = cached
        if self._stamp(path, result) != stamp:
            return None
        # git's "racy" rule: a file modified within the filesystem's timestamp
        # granularity of the read may have changed again without a new mtime
        newest = max([stamp[2], *(extra[2] for extra in stamp[3:] if extra is not None)])
        if newest >= read_at - RACY_NS:
            return None
        return result

    def _read(self, paths: list[Path]) -> dict[Path, LoadedSpec | list[SpecError]]:
        self._stat_memo = {}
        loader: SpecLoader | None = None
        out: dict[Path, LoadedSpec | list[SpecError]] = {}
        for path in paths:
            trusted = self._trusted(path)
            if trusted is not None:
                out[path] = trusted
                continue
            loader = loader or SpecLoader(self.plugins)
            read_at = time.time_ns()
            before = _stat(path)
            result = loader.load(path)
            stamp = self._stamp(path, result)
            if stamp is not None and stamp[:3] == before:
                self._files[path] = (stamp, result, read_at)
            else:  # saved again while it was read: read it again next time
                self._files.pop(path, None)
            out[path] = result
        for gone in set(self._files) - set(paths):
            del self._files[gone]
        return out

    def peek(self) -> list[LoadedSpec]:
        """The folder's valid specs as they are now, served or not (serve's start decides
        what job processes preload from them). Kept for the next reload, which does not
        read an unchanged file again."""
        paths = discover(self.folder)
        if isinstance(paths, SpecError):
            return []
        return [got for got in self._read(paths).values() if isinstance(got, LoadedSpec)]

    def reload(self) -> ReloadResult:
        """Read the folder and swap in what is valid; never raises for bad input.
        The result's ``outcome`` says whether anything is new (see ``Outcome``)."""
        now = time.time()
        result = ReloadResult(self.generation + 1, now)
        paths = discover(self.folder)
        if isinstance(paths, SpecError) and paths.message.startswith(EMPTY_FOLDER):
            paths = []  # for a running server an emptied folder is a mass removal, refused below
        if isinstance(paths, SpecError):
            result.refused = f"{paths.message}; keeping {len(self.agents)} agent(s) serving"
            result.errors.append(paths)
            return self._finish(result)
        if not paths and self.agents:
            result.refused = (f"every spec file is gone from {self.folder}; keeping {len(self.agents)} agent(s) "
                              "serving (a running server never drops to no agents at once; restart it to serve none)")
            return self._finish(result)
        read = self._read(paths)
        valid: dict[Path, LoadedSpec] = {}
        for path, got in read.items():
            if isinstance(got, list):
                result.errors.extend(got)
            else:
                valid[path] = got
        by_name: dict[str, list[Path]] = {}
        for path, loaded in valid.items():
            by_name.setdefault(loaded.name, []).append(path)
        for name, files in by_name.items():
            if len(files) > 1:
                for path in files:  # neither wins: both keep what they served before
                    others = ", ".join(str(p) for p in files if p != path)
                    result.errors.append(SpecError(str(path), key_path="name",
                                                   message=f"agent name {name!r} is also used by {others}"))
                    del valid[path]
        self._check_handoffs(valid, result)
        if self.gate is not None:
            self._gate(valid, result)
        new_agents = self._next_agents(valid, paths, result)
        self.agents = new_agents
        return self._finish(result)

    def _check_handoffs(self, valid: dict[Path, LoadedSpec], result: ReloadResult) -> None:
        """A spec handing off to an agent that will not be served (or to itself) is
        rejected, as `check` rejects it; a failing file's last good version counts as served."""
        failed = {Path(e.file) for e in result.errors}
        kept = [e.loaded for n, e in self.agents.items() if self._file_of.get(n) in failed]
        served = list(valid.values()) + [k for k in kept if k.name not in {v.name for v in valid.values()}]
        path_of = {loaded.name: path for path, loaded in valid.items()}
        rejected = set()
        for loaded, where, message in handoff_problems(served):
            path = path_of.get(loaded.name)
            if path is None or valid[path] is not loaded:
                continue  # a kept last good version: already served, not judged again
            result.errors.append(loaded.error_at(where, message))
            rejected.add(path)
        for path in rejected:
            del valid[path]

    def _gate(self, valid: dict[Path, LoadedSpec], result: ReloadResult) -> None:
        """Drop (as failing files) the new or changed specs the gate refuses."""
        assert self.gate is not None
        changed = {loaded.name for loaded in valid.values()
                   if (old := self.agents.get(loaded.name)) is None or old.loaded.digest != loaded.digest}
        if not changed:
            return
        specs = {name: entry.loaded for name, entry in self.agents.items()}
        specs.update({loaded.name: loaded for loaded in valid.values()})
        refused = self.gate(specs, changed, self.plugins)
        for path, loaded in list(valid.items()):
            for message in refused.get(loaded.name, []):
                result.errors.append(SpecError(str(path), message=message))
            if loaded.name in refused:
                del valid[path]

    def _next_agents(self, valid: dict[Path, LoadedSpec], present: list[Path], result: ReloadResult) -> dict[str, Entry]:
        agents: dict[str, Entry] = {}
        taken: dict[str, Path] = {}
        failed = {Path(e.file) for e in result.errors}
        # first the last good versions of failing files: they hold their names
        # whatever order the files come in
        for name, entry in self.agents.items():
            path = self._file_of.get(name)
            if path in failed and path not in valid:
                agents[name] = entry
                taken[name] = path
        for path in present:  # discover() sorted them
            loaded = valid.get(path)
            if loaded is None:
                continue
            if loaded.name in taken:  # another file's last good version holds the name
                result.errors.append(SpecError(str(path), key_path="name",
                                               message=f"agent name {loaded.name!r} is still served from {taken[loaded.name]}"))
                continue
            old = self.agents.get(loaded.name)
            if old is not None and old.loaded.digest == loaded.digest and self._file_of.get(loaded.name) == path:
                agents[loaded.name] = old
            else:
                agents[loaded.name] = Entry(loaded, result.generation, result.timestamp)
                (result.updated if old is not None else result.added).append(loaded.name)
            taken[loaded.name] = path
        result.removed = sorted(set(self.agents) - set(agents))
        self._file_of = taken
        return agents

    def refuse(self, reason: str) -> ReloadResult:
        """A reload that could not run (a plugin hook raised): nothing is swapped."""
        return self._finish(ReloadResult(self.generation + 1, time.time(), refused=reason))

    def _finish(self, result: ReloadResult) -> ReloadResult:
        result.errors.sort()
        previous = self.last
        if result.changed:
            self.generation = result.generation
            self.secrets.add_specs(self.agents[n].loaded for n in result.added + result.updated)
            for name in result.added + result.updated:
                self._publish(self.agents[name])
        else:
            result.generation = self.generation
        if result.ok:
            self.last_success_at = result.timestamp
        # what is news: the first reload, a change to what is served, or problems that
        # differ from the last reload's (a new error, or a fixed one). The same failure
        # seen again by the periodic scan is not.
        news = (previous is None or result.changed or previous.refused != result.refused
                or [str(e) for e in previous.errors] != [str(e) for e in result.errors])
        if not news:
            result.outcome = Outcome.NOOP
            return result  # the last reload that did something stays the one reported
        result.outcome = (Outcome.REFUSED if result.refused else Outcome.REJECTED if result.errors
                          else Outcome.APPLIED)
        self.last = result
        return result

    def _publish(self, entry: Entry) -> None:
        loaded = entry.loaded
        data = {
            "generation": entry.generation, "name": loaded.name, "file": str(loaded.path),
            "digest": loaded.digest, "instructions": loaded.instructions, "templates": loaded.templates,
            # python mode keeps SecretStr objects, which _plain() unwraps: mode="json"
            # would write pydantic's "**********" and the job would send that as its key
            "spec": loaded.spec.model_dump(exclude_unset=True),
            # a job's own findings (a claims pattern that timed out) then name file:line:col too
            "key_locs": [[list(key), *loc] for key, loc in loaded.key_locs.items()],
        }
        # atomic: a job never reads half a generation
        write_private_json(self.state_dir / "agents" / f"{loaded.name}.json", data, default=_plain)

    def unpublish(self, name: str) -> None:
        (self.state_dir / "agents" / f"{name}.json").unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """JSON for what a python-mode dump leaves as objects: secrets revealed, the
    rest (paths, enums...) as pydantic would write them in JSON mode."""
    revealed = reveal(value)
    if revealed is not value:
        return revealed
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def read_published(state_dir: Path, name: str, plugins: Plugins) -> tuple[LoadedSpec, int]:
    """In a job process: the newest generation the parent accepted for ``name``."""
    from ..spec.models import spec_model

    data = json.loads((state_dir / "agents" / f"{name}.json").read_text(encoding="utf-8"))
    spec = spec_model(plugins.registry).model_validate(data["spec"])
    loaded = LoadedSpec(Path(data["file"]), data["name"], spec, data["instructions"], data["digest"],
                        data["templates"], {tuple(key): (line, col) for key, line, col in data.get("key_locs", [])})
    return loaded, int(data["generation"])


def read_published_reachable(state_dir: Path, start: LoadedSpec, plugins: Plugins) -> dict[str, LoadedSpec]:
    """In a job: the generations serve publishes now of every agent the call can
    reach through handoffs, read once as the call starts, so the call keeps them
    whatever reloads follow."""
    from ..spec.handoffs import reachable

    def lookup(name: str) -> LoadedSpec | None:
        try:
            return read_published(state_dir, name, plugins)[0]
        except (OSError, ValueError):
            return None

    return reachable(start, lookup)
