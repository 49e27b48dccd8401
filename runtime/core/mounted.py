"""A secret as a deployment mounts it: a Kubernetes Secret file read into an
environment variable ends in a line break that no header, password or key may
carry. Its own module (no imports) so that spec models, the secret set and the
provider plugins all use this one rule without importing each other."""

from __future__ import annotations


def mounted_secret(text: str) -> str:
    """``text`` without the trailing line break(s) a mounted secret file ends in."""
    return text.rstrip("\r\n")
