"""The one error type the loader reports: a problem at ``file:line:col``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Loc = tuple[int, int]  # 1-based line, column
KeyPath = tuple[Union[str, int], ...]  # keys and list indexes from the document's root


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem in one file, printed like a compiler diagnostic."""

    file: str
    line: int = 1
    col: int = 1
    key_path: str = ""
    message: str = field(default="", compare=False)

    def __str__(self) -> str:
        # one problem, one line: a key or value may itself hold a line break
        where = f"{_escaped_breaks(self.file)}:{self.line}:{self.col}"  # a file name may hold one too
        message = _escaped_breaks(self.message)
        return f"{where}: {_escaped_breaks(self.key_path)}: {message}" if self.key_path else f"{where}: {message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "key_path": self.key_path,
            "message": self.message,
        }


def _escaped_breaks(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class SpecErrors(Exception):
    """Raised when a spec (or folder of specs) is not valid; holds every problem found."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def format_key_path(path: tuple[str | int, ...]) -> str:
    """``("pipeline", "llm", 0, "model")`` -> ``pipeline.llm[0].model``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
