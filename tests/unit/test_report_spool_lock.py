"""serve's lock on its report spool (observe/report_spool.py Spool.hold)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice_runtime.observe.report_spool import Spool, SpoolInUse


def test_a_second_holder_of_a_spool_is_refused_naming_the_first(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    spool = tmp_path / "spool"
    Spool(spool).hold()  # this process holds it; a POSIX lock is per process, so ask from another
    probe = ("import sys; from pathlib import Path; from voice_runtime.observe.report_spool import Spool, SpoolInUse\n"
             "try:\n    Spool(Path(sys.argv[1])).hold()\nexcept SpoolInUse as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(spool)], capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert f"the report spool {spool} is in use by another serve (pid {os.getpid()})" in out.stdout, out.stderr


def test_a_symlinked_lock_file_is_refused_and_what_it_points_at_is_left_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ".lock").symlink_to(victim)
    with pytest.raises(SpoolInUse, match="cannot be used as the lock"):
        Spool(spool).hold()
    assert victim.read_text() == "precious\n"
