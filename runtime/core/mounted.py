"""A secret as a deployment mounts it: a Kubernetes Secret file read into an
environment variable ends in a line break that no header, password or key may
carry. Its own module (no imports) so that spec models, the secret set and the
provider plugins all use this one rule without importing each other."""

from __future__ import annotations


def mounted_secret(text: str) -> str:
    """``text`` without the trailing line break(s) a mounted secret file ends in."""
    return text.rstrip("\r\n")


BOM = "\ufeff"


def header_trouble(text: str, *, tab: bool = True) -> str | None:
    """Why ``text`` cannot travel in an HTTP header (httpx would fail every request
    with "'ascii' codec can't encode..."), or None. A byte order mark is named: an
    editor's "UTF-8 with BOM" puts an invisible one first in a secret file."""
    if BOM in text:
        return ("holds a byte order mark (U+FEFF, invisible: a file saved as UTF-8 with BOM); "
                "save it without one")
    if not text.isascii() or any(c < " " and not (tab and c == "\t") or c == "\x7f" for c in text):
        return "has a character HTTP headers cannot carry"
    return None
