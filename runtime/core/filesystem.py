"""Reading a file a user named without ever blocking on it, and writing serve's
private files whole.

``open()`` on a FIFO waits for a writer, and a read from a character device may
never end: a spec's ``instructions_file`` or a plugin file that is one froze
``check`` and ``serve``'s event loop (SIGTERM included) until someone wrote to
it. Opening with O_NONBLOCK returns at once whatever the file is; only a regular
file is then read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def not_regular(mode: int) -> str | None:
    """What a file of this mode is, if it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def read_regular(path: Path, limit: int) -> bytes | str:
    """The file's bytes, or a one-line reason why not: missing, not a regular file
    (never opened for reading), larger than ``limit`` (never read past it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symbolic link (its target {os.readlink(path)} does not exist)"
        return "file not found"
    except IsADirectoryError:
        return "is a directory, not a regular file"
    except OSError as exc:  # a socket cannot be opened at all (ENXIO)
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (too many levels of symbolic links)"
        try:
            kind = not_regular(os.stat(path).st_mode)
        except OSError:
            kind = None
        if kind is not None:
            return f"is {kind}, not a regular file"
        return f"cannot read file: {exc.strerror or exc}"
    try:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind is not None:
            return f"is {kind}, not a regular file"
        if st.st_size > limit:
            return f"file is {st.st_size / 1024 / 1024:.1f} MiB; the limit is {limit // 1024} KiB"
        chunks, size = [], 0
        while size <= limit:  # a regular file: O_NONBLOCK does not apply, reads are whole
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while we read it
        return f"file is larger than the limit of {limit // 1024} KiB"
    return data


def write_private_json(target: Path, data: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """``data`` as JSON at ``target``, owner-only (0600) and whole: written beside it,
    then renamed over it, so a reader (a job process) never sees half of it. What
    serve writes to its state folder holds expanded ``${VAR}`` values."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, default=default)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
