"""`voice-runtime test`: the conversation tests in agents.d/tests/, one fresh text session per case."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.terminal import printable
from .common import AgentsDir, FormatOpt, PluginsOpt, guard_output, load_plugins, plugin_output, require_dir, session_logging
from .option_choices import LogLevel, OutputFormat


def test_cmd(
    agents_dir: AgentsDir,
    agent: Annotated[Optional[str], typer.Option("--agent", "-a", help="Only the cases of this agent.")] = None,
    tests: Annotated[Optional[Path], typer.Option("--tests", help="A test file or folder of them. "
                                                   "Default: tests/ inside the specs folder.")] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write the results as JUnit XML here.")] = None,
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
    log_level: Annotated[Optional[LogLevel], typer.Option("--log-level", case_sensitive=False,
                                                          help="Log level on stderr, for every library.")] = None,
) -> None:
    """Run conversation tests (agents.d/tests/*.yaml): one fresh text session per case.

    Exit code: 0 every case passed (skipped ones say why), 1 a case failed, 2 usage
    or an invalid test file (errors as file:line:col).
    """
    import asyncio

    from ..spec.loader import load_folder
    from ..session.testing.cases import TESTS_FOLDER, find_test_files
    from ..session.testing.report import render_json, render_text, write_junit
    from ..session.testing.suite import run_suite

    require_dir(agents_dir)
    secrets = guard_output()
    session_logging(log_level, False, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    folder = load_folder(agents_dir, loaded_plugins)
    secrets.add_specs(folder.specs)
    for error in folder.errors:  # an invalid spec's cases cannot run: say why (their files then name the agent)
        typer.echo(printable(str(error)), err=True)
    specs = {s.name: s for s in folder.specs}
    if agent is not None and agent not in specs:
        typer.echo(printable(f"error: no valid agent named {agent!r} in {agents_dir}; available: "
                             f"{', '.join(sorted(specs)) or 'none'}"), err=True)
        raise typer.Exit(2)
    root = tests if tests is not None else agents_dir / TESTS_FOLDER
    paths = find_test_files(root)
    if isinstance(paths, str) and tests is None and not root.exists():
        typer.echo(printable(f"error: no {TESTS_FOLDER}/ folder beside the specs in {agents_dir}: conversation tests "
                             f"are read from {root}/*.yaml (or give --tests FILE_OR_FOLDER)"), err=True)
        raise typer.Exit(2)
    if isinstance(paths, str):
        typer.echo(printable(f"error: {'--tests ' if tests is not None else ''}{root}: {paths}"), err=True)
        raise typer.Exit(2)
    if not paths:
        typer.echo(printable(f"error: no test files (*.yaml) in {root}"), err=True)
        raise typer.Exit(2)
    with plugin_output():
        suite = asyncio.run(run_suite(specs, paths, loaded_plugins, agents=None if agent is None else {agent}))
    if suite.errors:
        for error in suite.errors:
            typer.echo(printable(str(error)), err=True)
        files = {e.file for e in suite.errors}
        typer.echo(f"found {len(suite.errors)} error{'s' if len(suite.errors) != 1 else ''} in {len(files)} "
                   f"test file{'s' if len(files) != 1 else ''}", err=True)
        raise typer.Exit(2)
    typer.echo(render_json(suite.results) if format is OutputFormat.json else render_text(suite.results))
    if junit is not None:
        write_junit(suite.results, junit)
    raise typer.Exit(1 if suite.failed else 0)


def register(app: typer.Typer) -> None:
    app.command("test")(test_cmd)
