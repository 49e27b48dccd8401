"""The spool's dead/ folder held to its retention (``Spool.prune_dead``) on real files:
by age, count and size, oldest first, leaving what is not a letter; serve's
end-to-end test is test_call_reports.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

from voice_runtime.observe.report_spool import Retention, Spool


def _letter(spool: Spool, name: str, age_s: float, size: int = 100) -> None:
    path = spool.folder / "dead" / f"{name}.0.json"
    path.write_bytes(b"{" + b" " * (size - 2) + b"}")
    when = time.time() - age_s
    os.utime(path, (when, when))


def _kept(spool: Spool) -> list[str]:
    return sorted(p.name.split(".")[0] for p in (spool.folder / "dead").iterdir())


def test_letters_over_the_size_bound_go_oldest_first_until_the_rest_fit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", Retention(max_count=0, max_age_s=0, max_bytes=10_000))
    for n, size in enumerate([4_000, 4_000, 4_000, 4_000]):
        _letter(spool, f"m{n}", 100 - n, size)

    assert spool.prune_dead() == {"size": 2}
    assert _kept(spool) == ["m2", "m3"]
    assert spool.prune_dead() == {}  # nothing more once it fits


def test_age_then_count_then_size_each_named_and_other_files_left_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", Retention(max_count=3, max_age_s=3600, max_bytes=4_999))
    _letter(spool, "old", 7200)
    for n, size in enumerate([100, 4_000, 900, 100]):
        _letter(spool, f"m{n}", 100 - n, size)
    (spool.folder / "dead" / "README").write_text("an operator's note")

    # old: age; m0: the fourth of four left (count); m1: the three left hold 5,000 bytes (size)
    assert spool.prune_dead() == {"age": 1, "count": 1, "size": 1}
    assert _kept(spool) == ["README", "m2", "m3"]


def test_zero_turns_every_bound_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", Retention(max_count=0, max_age_s=0, max_bytes=0))
    for n in range(5):
        _letter(spool, f"m{n}", 10 * 86400, 100_000)
    assert spool.prune_dead() == {}
    assert len(_kept(spool)) == 5
