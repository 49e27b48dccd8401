"""What a running `serve` does with bad changes to its folder: it keeps serving the
last good generation and says what went wrong (the Prometheus / Caddy promise).

The tests that differ only in what they do to their own spec files share one serve
(``served``), with the watcher alone (no periodic scan: each change they make must be
seen by it) and the raising plugin of the first test in its plugins folder (inert for
specs that do not say "explode"); a test that needs other options, env, a folder or
plugins of its own, or its own exit, starts its own."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from fakes.openai_chat import FakeOpenAI
from helpers import REPO, run_cli, write
from serve_harness import RESIDENT, VERSION_PLUGIN, Serve, spec, system_prompts_for

from voice_runtime.plugins.manager import TIMEOUT_ENV


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
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served  # its plugins folder holds RAISING_PLUGIN as compliance.py
    write(serve.agents / "audited.yaml", spec("You are the desk.", fake_openai.base_url))
    first, bad = serve.wait_agent("audited")["generation"], failures(serve)
    write(serve.agents / "audited.yaml", spec("You explode.", fake_openai.base_url))
    serve.wait_for(lambda: failures(serve) == bad + 1, message="the failed reload")
    errors = serve.status()["last_reload"]["errors"]
    assert [e["message"] for e in errors] == [
        f"plugin 'compliance' ({serve.agents.parent / 'plugins' / 'compliance.py'}): "
        "voice_runtime_check_spec raised RuntimeError: the compliance plugin crashed"
    ]
    assert serve.metric("voice_runtime_config_last_reload_successful") == 0.0
    assert serve.agent("audited")["generation"] == first
    assert_still_serves(serve, fake_openai, "audited", "You are the desk.", "after the crash")


def test_a_half_written_spec_is_an_invalid_edit_never_a_deletion(served: Serve, fake_openai: FakeOpenAI) -> None:
    serve = served
    write(serve.agents / "truncated.yaml", spec("You are the desk.", fake_openai.base_url))
    first, bad = serve.wait_agent("truncated")["generation"], failures(serve)
    bigger = spec("You are the desk, version two, with a longer prompt.", fake_openai.base_url)
    with open(serve.agents / "truncated.yaml", "w") as f:  # the writer dies mid-write
        f.write(bigger[: len(bigger) // 2])
    serve.wait_for(lambda: failures(serve) >= bad + 1, message="the failed reload")
    status = serve.status()
    assert serve.names() == [RESIDENT, "truncated"]
    assert serve.agent("truncated")["generation"] == first
    assert status["last_reload"]["removed"] == []
    assert status["last_reload"]["errors"][0]["file"].endswith("truncated.yaml")
    assert_still_serves(serve, fake_openai, "truncated", "You are the desk.", "after the truncation")


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
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served  # --scan-interval 0
    write(serve.agents / "scribbled.yaml", spec("You are write number 0.", fake_openai.base_url))
    serve.wait_agent("scribbled")
    before = successes(serve)
    for i in range(1, 51):
        write(serve.agents / "scribbled.yaml", spec(f"You are write number {i}.", fake_openai.base_url))
        time.sleep(0.02)
    serve.wait_for(lambda: successes(serve) > before, message="a reload")
    time.sleep(1.5)  # anything still pending has run by now
    assert 1 <= successes(serve) - before <= 2
    assert_still_serves(serve, fake_openai, "scribbled", "You are write number 50.", "which write?")
    reloads = [line for line in serve.output().splitlines() if "reload (" in line]
    # reloads never overlap: each one logs once, in generation order. One that read the
    # file mid-write (a loaded machine stretches the writes) is rejected and logs the
    # generation it kept, so only the applied ones each have a generation of their own
    generations = [int(line.split("generation ")[1].split()[0]) for line in reloads]
    applied = [g for g, line in zip(generations, reloads) if "last good version kept" not in line]
    assert generations == sorted(generations) and len(set(applied)) == len(applied), reloads


def test_an_editor_rename_save_is_one_reload(served: Serve, fake_openai: FakeOpenAI) -> None:
    serve, agents = served, served.agents  # --scan-interval 0
    write(agents / "edited.yaml", spec("You are the desk.", fake_openai.base_url))
    first = serve.wait_agent("edited")["generation"]
    before = successes(serve)
    # what vim and most editors do: write a temp file, move the old one away, rename
    write(agents / ".edited.yaml.swp", spec("You are the saved desk.", fake_openai.base_url))
    os.replace(agents / "edited.yaml", agents / "edited.yaml~")
    os.replace(agents / ".edited.yaml.swp", agents / "edited.yaml")
    (agents / "edited.yaml~").unlink()
    serve.wait_for(lambda: serve.agent("edited")["generation"] == first + 1, message="the save")
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
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve, agents = served, served.agents  # --scan-interval 0
    write(agents / "attacked.yaml", spec("You are the desk.", fake_openai.base_url))
    serve.wait_agent("attacked")
    # what a valid edit takes to be applied here and now: the bound for each attack
    # is a ratio of it, so a loaded machine slows both alike
    started, applied = time.monotonic(), successes(serve)
    write(agents / "attacked.yaml", spec("You are the desk!", fake_openai.base_url))
    serve.wait_for(lambda: successes(serve) > applied, timeout=10, message="a valid edit")
    valid_edit_s = time.monotonic() - started
    peak_before, bad_before = peak_rss_mb(serve.proc.pid), failures(serve)
    for n, (kind, bad) in enumerate(HOSTILE.items(), start=1):
        started = time.monotonic()
        write(agents / "evil.yaml", bad)
        serve.wait_for(lambda: failures(serve) >= bad_before + n, timeout=10, message=f"the rejection of {kind}")
        # the watcher's settle window is 0.1 s; the rest is the loader's limits at work
        took = time.monotonic() - started
        assert took < 3 * valid_edit_s + 0.5, f"{kind}: {took:.2f} s, a valid edit {valid_edit_s:.2f} s"
        errors = serve.status()["last_reload"]["errors"]
        assert errors and all(e["file"].endswith("evil.yaml") for e in errors), kind
        assert serve.names() == ["attacked", RESIDENT], kind
        (agents / "evil.yaml").unlink()
        serve.wait_for(lambda: serve.metric("voice_runtime_config_last_reload_successful") == 1.0,
                       message=f"recovery after {kind}")
    assert not Path("/tmp/pwned").exists()
    # bounded memory: a 10 MB file is refused after reading its first MiB, a
    # bomb after 20,000 nodes
    assert peak_rss_mb(serve.proc.pid) - peak_before < 50
    assert_still_serves(serve, fake_openai, "attacked", "You are the desk!", "after the attacks")


# -- plugin files and special files dropped in during serve --------------------------


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def healthz_latency(serve: Serve) -> float:
    started = time.monotonic()
    code, _ = serve.get("/healthz")
    assert code == 200
    return time.monotonic() - started


def stall_bound(serve: Serve) -> float:
    """The slowest /healthz a stalled loop must exceed: the slowest of a second of
    answers from the idle serve (the machine's own latency, which load stretches),
    plus 1 s. Each fault here held the loop for 1.5-2 s or more."""
    slowest, deadline = 0.0, time.monotonic() + 1.0
    while time.monotonic() < deadline:
        slowest = max(slowest, healthz_latency(serve))
        time.sleep(0.05)
    return slowest + 1.0


def slowest_healthz_until(serve: Serve, done: Callable[[], bool], timeout: float = 30.0) -> float:
    """Poll /healthz until ``done()``; the slowest answer seen."""
    slowest, deadline = 0.0, time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, serve.output()[-3000:]
        assert serve.proc.poll() is None, serve.output()[-3000:]
        slowest = max(slowest, healthz_latency(serve))
        time.sleep(0.02)
    return slowest


SLOW_PLUGIN = '''
import os
import threading
import time

import voice_runtime

with open(os.environ["IMPORT_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
time.sleep(2.0)


@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("slow.ping", lambda: None)
'''


def test_a_slow_thread_starting_plugin_is_imported_once_per_change_and_never_stalls_healthz(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """Every scan used to re-execute every plugin file in serve's event loop: a 2 s
    sleep at import froze /healthz for 2 s each time, and each run started one more
    thread. Now a file is tried in a child process, imported off the loop, and only
    again when its bytes change."""
    imports = tmp_path / "imports.log"
    imports.touch()
    (tmp_path / "plugins").mkdir()
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--scan-interval", "0.3", env={"IMPORT_LOG": str(imports), TIMEOUT_ENV: "10"}) as serve:
        serve.wait_ready()
        pid = serve.proc.pid
        bound = stall_bound(serve)
        write(tmp_path / "plugins" / "slow.py", SLOW_PLUGIN)
        slowest = slowest_healthz_until(serve, lambda: "plugins reloaded" in serve.output())
        assert slowest < bound, f"/healthz took {slowest:.2f} s while the plugin was tried and imported"
        importers = imports.read_text().split()
        assert len(importers) == 2 and importers.count(str(pid)) == 1, importers  # the trial, then serve
        time.sleep(1.0)  # the thread pools that run reloads have grown to their size
        before = threads(pid)
        slowest = 0.0
        deadline = time.monotonic() + 3.0  # about ten scans
        while time.monotonic() < deadline:
            slowest = max(slowest, healthz_latency(serve))
            time.sleep(0.05)
        assert slowest < bound
        assert imports.read_text().split() == importers, "an unchanged plugin was executed again"
        assert threads(pid) == before
        write(tmp_path / "plugins" / "slow.py", SLOW_PLUGIN + "# edited\n")
        serve.wait_for(lambda: imports.read_text().split().count(str(pid)) == 2, message="the edited plugin")
        assert serve.status()["plugin_errors"] == []
        assert serve.stop() == 0


HOSTILE_PLUGINS = {
    # name -> (source, line, what /status and the log say)
    "hang": ("import time\n\nwhile True:\n    time.sleep(0.05)\n", 4, "plugin did not finish importing within 1.5 s"),
    "os-exit": ("import os\n\nos._exit(3)\n", 3, "plugin called exit with code 3 while importing"),
    "keyboard-interrupt": ("raise KeyboardInterrupt\n", 1, "plugin failed to import: KeyboardInterrupt"),
    "system-exit": ("import sys\nsys.exit(3)\n", 2, "plugin failed to import: SystemExit: 3"),
    "sigkill": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", 1,
                "plugin killed the process importing it (SIGKILL)"),
}


def test_a_plugin_that_hangs_exits_or_interrupts_at_import_during_serve_is_reported_and_serve_keeps_serving(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """A plugin added during serve that called os._exit(3) or raised KeyboardInterrupt
    killed serve silently, with no drain, and left its state folders behind. Each is
    now a plugin error at its file and line (in /status, the log and the failure
    count, once, however many scans follow); serve keeps serving, then drains and
    cleans up on SIGTERM."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--scan-interval", "0.5", env={"TMPDIR": str(tmp), TIMEOUT_ENV: "1.5"}) as serve:
        serve.wait_ready()
        pid = serve.proc.pid
        assert list(tmp.glob("voice-runtime-*")), "the state folders are under TMPDIR"
        bound = stall_bound(serve)
        for n, (kind, (source, line, message)) in enumerate(HOSTILE_PLUGINS.items(), start=1):
            write(plugins / "bad.py", source)
            expected = [f"{plugins / 'bad.py'}:{line}:1: {message}"]
            slowest = slowest_healthz_until(serve, lambda: serve.status()["plugin_errors"] == expected)
            assert slowest < bound, f"{kind}: /healthz took {slowest:.2f} s"
            assert failures(serve) == n, kind
            assert serve.metric("voice_runtime_config_last_reload_successful") == 0.0, kind
            assert expected[0] in serve.output(), kind
            time.sleep(1.2)  # two scans find the same bytes: not tried, logged or counted again
            assert failures(serve) == n, kind
            assert serve.proc.poll() is None and Path(f"/proc/{pid}").exists(), kind
            (plugins / "bad.py").unlink()
            serve.wait_for(lambda: serve.status()["plugin_errors"] == [], message=f"recovery after {kind}")
            assert serve.metric("voice_runtime_config_last_reload_successful") == 1.0, kind
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "after the plugins")
        assert serve.stop() == 0
    assert "drained and unregistered" in serve.output()
    assert list(tmp.glob("voice-runtime-*")) == [], "serve left state behind"


def test_a_job_started_after_a_rejected_plugin_edit_runs_the_plugin_code_serve_accepted(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """Job processes used to import plugins/ as it was when they started: an edit that
    serve refused (here: it exits at import) still ran, and killed, every new job.
    Jobs import the files serve accepted, as it accepted them."""
    plugins = tmp_path / "plugins"
    write(plugins / "build.py", VERSION_PLUGIN.format(version="one"))
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url) + "tools: [build.version]\n")
    fake_openai.use_tool_then_answer("code_version")
    with Serve(agents) as serve:
        serve.wait_ready()
        write(plugins / "build.py", VERSION_PLUGIN.format(version="two") + "\nimport os\n\nos._exit(3)\n")
        serve.wait_for(lambda: serve.status()["plugin_errors"], message="the rejected edit")
        serve.simulate("desk", ["version?"])
        serve.wait_for(lambda: len(fake_openai.chat_requests) >= 2, message="the call's tool turn")
        assert fake_openai.chat_requests[1]["messages"][-1]["content"] == "plugin code one"


def test_a_fifo_as_instructions_file_during_serve_is_refused_and_serve_stays_responsive(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    """A FIFO as instructions_file froze serve (healthz dead, SIGTERM ignored) until
    someone wrote to it. Now it is an invalid edit at its key, like any other."""
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        bound = stall_bound(serve)
        (agents / "prompts").mkdir()
        os.mkfifo(agents / "prompts" / "p.md")
        text = spec("x", fake_openai.base_url).replace('instructions: "x"', "instructions_file: prompts/p.md")
        write(agents / "piped.yaml", text)
        os.mkfifo(agents / "fifo.yaml")
        serve.wait_for(lambda: failures(serve) >= 1, timeout=10, message="the rejection")
        errors = [e["text"] for e in serve.status()["last_reload"]["errors"]]
        prompt = (agents / "prompts" / "p.md").resolve()
        assert errors == [
            f"{agents}/fifo.yaml:1:1: is a FIFO (named pipe), not a regular file",
            f"{agents}/piped.yaml:2:20: instructions_file: {prompt}: is a FIFO (named pipe), not a regular file",
        ]
        assert healthz_latency(serve) < bound
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "past the pipe")
        started = time.monotonic()
        assert serve.stop(timeout=30) == 0
        assert time.monotonic() - started < 15


def test_a_plugins_folder_created_after_serve_started_is_loaded(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """serve used to watch plugins/ only if it existed at start: one made later was
    never loaded (unknown tool clock.now, while check said OK)."""
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    write(agents / "clocky.yaml", spec("You tell the time.", fake_openai.base_url, extra="tools: [clock.now]\n"))
    with Serve(agents, "--scan-interval", "0") as serve:  # the watcher alone: no periodic scan
        serve.wait_ready()
        assert serve.agent("clocky") is None
        assert any("clock.now" in e["message"] for e in serve.status()["last_reload"]["errors"])
        (tmp_path / "plugins").mkdir()  # the default: plugins/ beside the specs folder
        write(tmp_path / "plugins" / "clock.py", (REPO / "plugins" / "clock.py").read_text())
        serve.wait_for(lambda: (serve.agent("clocky") or {}).get("ready"), message="clocky ready")
        assert "clock.now" in serve.agent("clocky")["tools"]
        assert serve.status()["last_reload"]["errors"] == []
        assert serve.metric("voice_runtime_config_last_reload_successful") == 1.0
    assert run_cli("check", "--offline", agents).rc == 0


def test_a_fix_found_by_the_periodic_scan_is_logged_and_counted_like_one_the_watcher_sees(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """The instructions file lives outside the watched folder, so only the periodic
    scan sees it go and come back. The fix used to be neither logged nor counted,
    while voice_runtime_config_last_reload_successful went back to 1."""
    write(tmp_path / "prompts" / "desk.md", "You are the desk.")
    text = spec("x", fake_openai.base_url).replace('instructions: "x"', "instructions_file: ../prompts/desk.md")
    write(agents / "desk.yaml", text)
    with Serve(agents, "--scan-interval", "0.5") as serve:
        serve.wait_ready()
        ok, bad = successes(serve), failures(serve)
        (tmp_path / "prompts" / "desk.md").rename(tmp_path / "prompts" / "desk.md.away")
        serve.wait_for(lambda: failures(serve) == bad + 1, message="the scan finding the file gone")
        assert serve.metric("voice_runtime_config_last_reload_successful") == 0.0
        assert serve.status()["last_reload"]["outcome"] == "rejected"
        broken_at = len(serve.output())
        (tmp_path / "prompts" / "desk.md.away").rename(tmp_path / "prompts" / "desk.md")
        serve.wait_for(lambda: serve.metric("voice_runtime_config_last_reload_successful") == 1.0, message="the fix")
        assert successes(serve) == ok + 1
        assert serve.status()["last_reload"]["outcome"] == "applied"
        fixed = [line for line in serve.output()[broken_at:].splitlines() if "reload (scan)" in line]
        assert len(fixed) == 1 and "the previous problems are gone" in fixed[0], fixed
        time.sleep(1.5)  # later scans find nothing new: nothing more is logged or counted
        assert (successes(serve), failures(serve)) == (ok + 1, bad + 1)
        assert_still_serves(serve, fake_openai, "desk", "You are the desk.", "after the fix")


# the shared serve (``served``): the watcher alone, and the first test's raising plugin
SHARED_SERVE_ARGS = ("--scan-interval", "0")
SHARED_SERVE_PLUGINS = {"compliance.py": RAISING_PLUGIN}
