"""``serve --reports FILE``: report targets for every call serve takes, besides each
spec's own ``reports:`` (a platform team's archive or analytics webhook that no spec
author has to remember). The file is YAML in the spec's format:

    apiVersion: voice-runtime/v1
    reports:
      - webhook: {url: https://reports.example.com/calls, secret: "${REPORTS_WEBHOOK_SECRET}"}
      - file: {dir: /var/lib/voice-runtime/reports-archive}

read with the spec loader (``${VAR}`` from the environment, errors at file:line:col);
a ``file`` target's folder is relative to the file's folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .errors import SpecError
from .models import ReportTarget, StrictModel

if TYPE_CHECKING:
    from .yaml_tree import Walker


class ReportsFile(StrictModel):
    apiVersion: Literal["voice-runtime/v1"] = Field(description="Spec format version.")
    reports: list[ReportTarget] = Field(min_length=1, max_length=8, description="Where every call's report goes.")


def load_reports_file(path: Path, loader: Any) -> tuple[list[dict[str, Any]], dict[str, str]] | list[SpecError]:
    """The file's targets as the spool's plain data and its ``${VAR}`` values (value ->
    ``${VAR}`` text, for the command's redaction: a password in a webhook URL's
    userinfo reached serve's log otherwise), or its errors. ``loader`` is a
    ``SpecLoader`` (its YAML reading, ${VAR} expansion and error positions)."""
    got = loader.validate(path, ReportsFile, "a reports file", "apiVersion: voice-runtime/v1")
    if isinstance(got, list):
        return got
    literal = literal_secrets(got[0].reports, got[1])
    if literal:
        return literal
    return target_data(got[0].reports, path.parent), dict(got[1].expanded.values())


def literal_secrets(targets: list[ReportTarget], walker: Walker) -> list[SpecError]:
    """A webhook secret written as text in the file, each at its file:line:col: like
    SIP passwords and the call/talk tokens, it must come from ``${VAR}`` (a literal one
    sits in every copy of the file, its history and reviews)."""
    out = []
    for n, target in enumerate(targets):
        where = ("reports", n, "webhook", "secret")
        if target.webhook is not None and where not in walker.expanded:
            # never quoting the value: it is a secret written in a file
            out.append(walker.error(where, "write the signing secret as a ${VAR} read from the environment (such "
                                           "as ${REPORTS_WEBHOOK_SECRET}), not as text in the file", value=True))
    return out


def target_data(targets: list[ReportTarget], base: Path) -> list[dict[str, Any]]:
    """Report targets as plain data for the spool, a file target's folder resolved
    against ``base`` (the folder of the file that named it)."""
    out: list[dict[str, Any]] = []
    for target in targets:
        if target.webhook is not None:
            out.append({"webhook": target.webhook.model_dump()})
        elif target.file is not None:
            out.append({"file": {"dir": str((base / target.file.dir).resolve())}})
    return out
