"""`voice-runtime schema`: the JSON Schema of a spec, plugin providers included."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import PluginsOpt, load_plugins


def schema(
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    plugins: PluginsOpt = None,
) -> None:
    """Print the JSON Schema of a spec (built-in and plugin providers included)."""
    from ..spec.schema import schema_json

    text = schema_json(load_plugins(None, plugins).registry)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
