"""What a running `serve` does with bad changes to its folder: it keeps serving the
last good generation and says what went wrong (the Prometheus / Caddy promise)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fakes.openai_chat import FakeOpenAI
from helpers import write
from serve_harness import Serve, spec, system_prompts_for


def failures(serve: Serve) -> float:
    return serve.metric('voice_runtime_config_reloads_total{result="failure"}') or 0.0


def successes(serve: Serve) -> float:
    return serve.metric('voice_runtime_config_reloads_total{result="success"}') or 0.0


def assert_still_serves(serve: Serve, fake: FakeOpenAI, agent: str, instructions: str, probe: str) -> None:
    serve.simulate(agent, [probe])
    serve.wait_for(lambda: system_prompts_for(fake, probe), message=f"a job of {agent}")
    assert system_prompts_for(fake, probe) == [instructions]


RAISING_PLUGIN = '''
import voice_runtime


@voice_runtime.hookimpl
def voice_runtime_check_spec(spec, path):
    if "explode" in (spec.instructions or ""):
        raise RuntimeError("the compliance plugin crashed")
    return []
'''


def test_a_plugin_raising_while_a_new_generation_is_built_swaps_nothing_and_is_counted(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(tmp_path / "plugins" / "compliance.py", RAISING_PLUGIN)
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        write(agents / "desk.yaml", spec("You explode.", fake_openai.base_url))
        serve.wait_for(lambda: failures(serve) == 1.0, message="the failed reload")
        errors = serve.status()["last_reload"]["errors"]
        assert [e["message"] for e in errors] == [
            "a plugin's voice_runtime_check_spec raised RuntimeError: the compliance plugin crashed"
        ]
        assert serve.metric("voice_runtime_config_last_reload_successful") == 0.0
        assert serve.agent("desk")["generation"] == 1
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "after the crash")


def test_a_half_written_spec_is_an_invalid_edit_never_a_deletion(agents: Path, fake_openai: FakeOpenAI) -> None:
    good = spec("You are the desk.", fake_openai.base_url)
    write(agents / "desk.yaml", good)
    with Serve(agents) as serve:
        serve.wait_ready()
        bigger = spec("You are the desk, version two, with a longer prompt.", fake_openai.base_url)
        with open(agents / "desk.yaml", "w") as f:  # the writer dies mid-write
            f.write(bigger[: len(bigger) // 2])
        serve.wait_for(lambda: failures(serve) >= 1.0, message="the failed reload")
        status = serve.status()
        assert [a["name"] for a in status["agents"]] == ["desk"]
        assert status["agents"][0]["generation"] == 1
        assert status["last_reload"]["removed"] == []
        assert status["last_reload"]["errors"][0]["file"].endswith("desk.yaml")
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "after the truncation")


def test_every_spec_deleted_at_once_is_refused_and_the_agents_keep_serving(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    write(agents / "sales.yaml", spec("You are sales.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        for path in agents.glob("*.yaml"):
            path.unlink()
        serve.wait_for(lambda: serve.status()["last_reload"]["refused"], message="the refusal")
        status = serve.status()
        assert "every spec file is gone" in status["last_reload"]["refused"]
        assert sorted(a["name"] for a in status["agents"]) == ["desk", "sales"]
        assert serve.metric("voice_runtime_config_last_reload_successful") == 0.0
        assert_still_serves(serve, fake_openai, "sales", "You are sales.", "anyone there?")


def test_a_folder_that_vanishes_is_refused_and_the_agents_keep_serving(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--scan-interval", "0.5") as serve:
        serve.wait_ready()
        agents.rename(tmp_path / "unmounted")  # a volume that went away
        serve.wait_for(lambda: serve.status()["last_reload"]["refused"], message="the refusal")
        assert "no such directory" in serve.status()["last_reload"]["refused"]
        assert [a["name"] for a in serve.status()["agents"]] == ["desk"]
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "still mounted?")
        (tmp_path / "unmounted").rename(agents)
        serve.wait_for(lambda: serve.metric("voice_runtime_config_last_reload_successful") == 1.0,
                       message="recovery when the folder is back")


def test_fifty_writes_in_one_second_make_at_most_two_reloads_and_the_last_write_wins(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are write number 0.", fake_openai.base_url))
    with Serve(agents, "--scan-interval", "0") as serve:
        serve.wait_ready()
        before = successes(serve)
        for i in range(1, 51):
            write(agents / "desk.yaml", spec(f"You are write number {i}.", fake_openai.base_url))
            time.sleep(0.02)
        serve.wait_for(lambda: successes(serve) > before, message="a reload")
        time.sleep(1.5)  # anything still pending has run by now
        assert 1 <= successes(serve) - before <= 2
        assert_still_serves(serve, fake_openai, "desk", "You are write number 50.", "which write?")
        out = serve.output()
        # reloads never overlap: each one logs once, in generation order
        generations = [int(line.split("generation ")[1].split()[0]) for line in out.splitlines() if "reload (" in line]
        assert generations == sorted(generations) and len(set(generations)) == len(generations)


def test_an_editor_rename_save_is_one_reload(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--scan-interval", "0") as serve:
        serve.wait_ready()
        before = successes(serve)
        # what vim and most editors do: write a temp file, move the old one away, rename
        write(agents / ".desk.yaml.swp", spec("You are the saved desk.", fake_openai.base_url))
        os.replace(agents / "desk.yaml", agents / "desk.yaml~")
        os.replace(agents / ".desk.yaml.swp", agents / "desk.yaml")
        (agents / "desk.yaml~").unlink()
        serve.wait_for(lambda: serve.agent("desk")["generation"] == 2, message="the save")
        time.sleep(1.0)
        assert successes(serve) - before == 1
        assert serve.status()["last_reload"]["removed"] == []


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


HOSTILE = {
    "yaml-bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
    "10-MB": "x: '" + "y" * (10 * 1024 * 1024) + "'\n",
    "10000-deep": "a: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "python-object": "apiVersion: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
}


def test_hostile_files_dropped_in_during_serve_are_each_rejected_fast_and_the_rest_keeps_serving(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--scan-interval", "0") as serve:
        serve.wait_ready()
        peak_before = peak_rss_mb(serve.proc.pid)
        for n, (kind, bad) in enumerate(HOSTILE.items(), start=1):
            started = time.monotonic()
            write(agents / "evil.yaml", bad)
            serve.wait_for(lambda: failures(serve) >= n, timeout=10, message=f"the rejection of {kind}")
            # the watcher's settle window is 0.1 s; the rest is the loader's limits at work
            assert time.monotonic() - started < 1.0, kind
            errors = serve.status()["last_reload"]["errors"]
            assert errors and all(e["file"].endswith("evil.yaml") for e in errors), kind
            assert [a["name"] for a in serve.status()["agents"]] == ["desk"], kind
            (agents / "evil.yaml").unlink()
            serve.wait_for(lambda: serve.metric("voice_runtime_config_last_reload_successful") == 1.0,
                           message=f"recovery after {kind}")
        assert not Path("/tmp/pwned").exists()
        # bounded memory: a 10 MB file is refused after reading its first MiB, a
        # bomb after 20,000 nodes
        assert peak_rss_mb(serve.proc.pid) - peak_before < 50
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "after the attacks")
