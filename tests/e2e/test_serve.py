"""`voice-runtime serve` end to end: a real serve process, real livekit AgentServers
running simulated jobs, the real openai plugin against the fake LLM.

The tests that take serve's defaults and differ only in the agents they add share one
serve (``served``: each adds agents of its own, each with its own fake LLM, and they
are removed after it); a test that needs other options, env or its own exit starts its own."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI
from helpers import write
from serve_harness import RESIDENT, VERSION_PLUGIN, Serve, spec, system_prompts_for


def test_an_edit_reaches_the_next_job_while_a_job_started_before_it_finishes_on_the_old_spec(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served
    write(serve.agents / "versioned.yaml", spec("You are version one.", fake_openai.base_url))
    first = serve.wait_agent("versioned")["generation"]
    serve.simulate("versioned", ["early-1", "early-2"], gap_s=4.0)
    serve.wait_for(lambda: system_prompts_for(fake_openai, "early-1"), message="the first job's first turn")
    write(serve.agents / "versioned.yaml", spec("You are version two.", fake_openai.base_url))
    serve.wait_for(lambda: serve.agent("versioned")["generation"] == first + 1, message="the next generation")
    serve.simulate("versioned", ["late-1"])
    serve.wait_for(lambda: system_prompts_for(fake_openai, "late-1"), message="the second job's turn")
    serve.wait_for(lambda: system_prompts_for(fake_openai, "early-2"), message="the first job's second turn")
    assert system_prompts_for(fake_openai, "early-1") == ["You are version one."]
    assert system_prompts_for(fake_openai, "late-1") == ["You are version two."]
    # the job that started before the edit finished on the spec it started with
    assert system_prompts_for(fake_openai, "early-2") == ["You are version one."]


def test_an_invalid_edit_keeps_the_last_good_spec_serving_and_reports_where_the_error_is(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served
    write(serve.agents / "mistyped.yaml", spec("You are the good version.", fake_openai.base_url))
    good = serve.wait_agent("mistyped")["generation"]
    assert serve.metric("voice_runtime_config_last_reload_successful") == 1.0
    failures = serve.metric('voice_runtime_config_reloads_total{result="failure"}') or 0.0
    write(serve.agents / "mistyped.yaml", spec("You are broken.", fake_openai.base_url) + "  modle: nope\n")
    serve.wait_for(lambda: serve.metric("voice_runtime_config_last_reload_successful") == 0.0,
                   message="the failed reload")
    errors = serve.status()["last_reload"]["errors"]
    assert [(e["file"].endswith("mistyped.yaml"), e["line"], e["col"], e["key_path"]) for e in errors] == [
        (True, 6, 3, "pipeline.modle")
    ]
    assert "mistyped.yaml:6:3: pipeline.modle: unknown key 'modle'" in errors[0]["text"]
    assert serve.agent("mistyped")["generation"] == good
    assert serve.metric('voice_runtime_config_reloads_total{result="failure"}') == failures + 1
    serve.simulate("mistyped", ["still there?"])
    serve.wait_for(lambda: system_prompts_for(fake_openai, "still there?"), message="a job on the last good spec")
    assert system_prompts_for(fake_openai, "still there?") == ["You are the good version."]
    write(serve.agents / "mistyped.yaml", spec("You are the fixed version.", fake_openai.base_url))
    serve.wait_for(lambda: serve.metric("voice_runtime_config_last_reload_successful") == 1.0,
                   message="the fixing reload")
    assert serve.agent("mistyped")["generation"] == good + 1
    assert serve.status()["last_reload"]["errors"] == []


def test_a_configmap_style_symlink_swap_is_picked_up_exactly_once(agents: Path, fake_openai: FakeOpenAI) -> None:
    # what the kubelet does: files live in a timestamped folder, `..data` points at
    # it, and the visible file is a symlink through `..data`
    first = agents / "..2026_11_21_01"
    write(first / "desk.yaml", spec("You are from the first ConfigMap.", fake_openai.base_url))
    (agents / "..data").symlink_to(first.name)
    (agents / "desk.yaml").symlink_to("..data/desk.yaml")
    with Serve(agents, "--scan-interval", "0.5") as serve:
        serve.wait_ready()
        before = serve.metric('voice_runtime_config_reloads_total{result="success"}')
        second = agents / "..2026_11_21_02"
        write(second / "desk.yaml", spec("You are from the second ConfigMap.", fake_openai.base_url))
        (agents / "..data_tmp").symlink_to(second.name)
        (agents / "..data_tmp").replace(agents / "..data")  # atomic rename over the old link
        serve.wait_for(lambda: serve.agent("desk")["generation"] == 2, message="generation 2")
        time.sleep(2.0)  # several scans and any late watch events
        assert serve.metric('voice_runtime_config_reloads_total{result="success"}') == before + 1
        assert serve.agent("desk")["generation"] == 2
        serve.simulate("desk", ["which map?"])
        serve.wait_for(lambda: system_prompts_for(fake_openai, "which map?"), message="a job")
        assert system_prompts_for(fake_openai, "which map?") == ["You are from the second ConfigMap."]


def test_adding_a_file_registers_an_agent_and_deleting_it_drains_and_unregisters_it(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served  # it already serves one agent, the resident: the one that stays
    write(serve.agents / "sales.yaml", spec("You are sales.", fake_openai.base_url))
    serve.wait_agent("sales")
    serve.simulate("sales", ["buy?"])
    serve.wait_for(lambda: system_prompts_for(fake_openai, "buy?"), message="a sales job")
    assert system_prompts_for(fake_openai, "buy?") == ["You are sales."]
    (serve.agents / "sales.yaml").unlink()
    serve.wait_for(lambda: serve.agent("sales") is None, message="sales removed")
    assert serve.names() == [RESIDENT]
    serve.wait_for(lambda: "agent sales drained and unregistered" in serve.output(), message="the drain")
    assert serve.metric("voice_runtime_agents_loaded") == 1.0


def test_an_agent_removed_while_its_simulated_call_is_still_launching_is_drained_after_that_call(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    """No prewarmed process (the harness's --idle-processes 0): the call's job waits
    for one to start, and livekit lists it only then; the drain must count it anyway."""
    serve = served
    write(serve.agents / "leaving.yaml", spec("You are leaving.", fake_openai.base_url))
    serve.wait_agent("leaving")
    body = json.dumps({"agent": "leaving", "turns": ["first words", "last words"], "gap_s": 2.0}).encode()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(serve.post, "/simulate?wait=1", body, timeout=120)
        # the request has reached serve (it is not refused as unknown) and its job is being launched
        serve.wait_for(lambda: "leaving" in serve.output() and call.running(), message="the request sent")
        time.sleep(0.1)
        (serve.agents / "leaving.yaml").unlink()
        serve.wait_for(lambda: system_prompts_for(fake_openai, "last words"), timeout=60, message="the second turn")
        # the call still runs (its second turn is being answered): the agent is not drained yet
        assert "agent leaving drained and unregistered" not in serve.output()
        code, report = call.result()
    assert code == 200 and report["ok"], report
    assert [(t["user"], t["error"]) for t in report["turns"]] == [("first words", None), ("last words", None)]
    serve.wait_for(lambda: "agent leaving drained and unregistered" in serve.output(), message="the drain")
    assert "still in progress" not in serve.output()


def test_renaming_an_agent_drains_the_old_name_and_registers_the_new_one(served: Serve, fake_openai: FakeOpenAI) -> None:
    serve = served
    write(serve.agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url, name="front-desk"))
    serve.wait_agent("front-desk")
    write(serve.agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url, name="reception"))
    serve.wait_for(lambda: serve.names() == ["reception", RESIDENT], message="rename")
    serve.wait_agent("reception")
    assert "agent front-desk drained and unregistered" in serve.wait_for(
        lambda: "front-desk drained" in serve.output() and serve.output(), message="the old name's drain")


def test_sigterm_lets_a_call_in_progress_finish_then_exits_0(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        serve.simulate("desk", ["first", "second"], gap_s=3.0)
        serve.wait_for(lambda: system_prompts_for(fake_openai, "first"), message="the call's first turn")
        assert serve.stop() == 0
        # the call in progress was drained, not cut: its second turn ran before exit
        assert system_prompts_for(fake_openai, "second") == ["You are the desk."]


def test_a_livekit_url_without_its_credentials_is_a_one_line_error_before_anything_starts(agents: Path) -> None:
    from helpers import run_cli

    write(agents / "desk.yaml", spec("You are the desk.", "http://127.0.0.1:9/v1"))
    result = run_cli("serve", agents, env={"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": None,
                                           "LIVEKIT_API_SECRET": None})
    assert result.rc == 2
    assert result.stderr.strip().splitlines() == [
        "error: LIVEKIT_API_KEY, LIVEKIT_API_SECRET not set (LiveKit's URL and API credentials; "
        "or use --local to talk to the agents from a browser without LiveKit)"
    ]


def test_serve_without_a_livekit_url_serves_the_agents_for_browser_calls_and_prints_the_page(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    env = {"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None}
    with Serve(agents, env=env, unregistered=False) as serve:
        serve.wait_ready()
        assert (f"no LiveKit (local mode): talk to an agent in a browser at http://127.0.0.1:{serve.port}/talk/ "
                f"(e.g. http://127.0.0.1:{serve.port}/talk/desk)") in serve.output()
        code, page = serve.get("/talk/desk")
        assert code == 200 and 'data-testid="start"' in page
        assert serve.simulate("desk", ["still simulated"])["agent"] == "desk"  # /simulate works beside it
        assert serve.stop() == 0


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--http-port", "99999", "less than or equal to 65535"),  # a traceback from the socket
    ("--http-port", "-1", "greater than or equal to 1"),
    ("--drain-timeout", "nan", "less than or equal to 86400"),  # a traceback on stop
    ("--drain-timeout", "inf", "less than or equal to 86400"),  # a traceback at start
    ("--scan-interval", "-5", "greater than or equal to 0"),  # taken silently
    ("--load-threshold", "2", "less than or equal to 1"),
    ("--idle-processes", "100000", "less than or equal to 64"),  # tried to prewarm them all
])
def test_a_serve_number_out_of_range_is_a_usage_error_naming_the_option(
    agents: Path, option: str, value: str, why: str
) -> None:
    from helpers import run_cli

    write(agents / "desk.yaml", spec("desk", "http://127.0.0.1:9/v1"))
    result = run_cli("serve", agents, "--unregistered", "--http-host", "127.0.0.1", option, value, timeout=60)
    assert result.rc == 2, result.output
    assert f"Error: Invalid value for '{option}': Input should be {why}" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_an_unreachable_livekit_keeps_serve_up_not_ready_and_still_reloading(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    from mcp_servers.harness import free_port

    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    env = {"LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}", "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s3cr3t-livekit"}
    with Serve(agents, env=env, unregistered=False) as serve:
        serve.wait_for(lambda: serve.get("/healthz")[0] == 200, message="/healthz")
        reason = "agent desk is not registered (connecting to LiveKit at ws://127.0.0.1:"
        serve.wait_for(lambda: reason in serve.get("/readyz")[1], message="desk loaded")  # specs load off the loop
        assert serve.get("/readyz")[0] == 503
        write(agents / "desk.yaml", spec("You are the new desk.", fake_openai.base_url))
        serve.wait_for(lambda: serve.agent("desk")["generation"] == 2, message="a reload while disconnected")
        assert serve.get("/healthz")[0] == 200
        assert "s3cr3t-livekit" not in serve.get("/status")[1] + serve.get("/metrics")[1] + serve.output()
        assert serve.stop() == 0


def test_a_changed_plugin_reaches_new_calls_through_recycled_prewarmed_processes(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    plugins = tmp_path / "plugins"
    write(plugins / "build.py", VERSION_PLUGIN.format(version="one"))
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url) + "tools: [build.version]\n")
    fake_openai.use_tool_then_answer("code_version")
    with Serve(agents, "--idle-processes", "1") as serve:
        serve.wait_ready()
        serve.simulate("desk", ["version?"])
        serve.wait_for(lambda: len(fake_openai.chat_requests) >= 2, message="the first call's tool turn")
        assert fake_openai.chat_requests[1]["messages"][-1]["content"] == "plugin code one"
        write(plugins / "build.py", VERSION_PLUGIN.format(version="two"))
        serve.wait_for(lambda: "recycling" in serve.output() or "reload (watch)" in serve.output(),
                       message="the plugin reload")
        time.sleep(1.0)  # the recycled idle process is replaced
        serve.simulate("desk", ["version now?"])
        serve.wait_for(lambda: len(fake_openai.chat_requests) >= 4, message="the second call's tool turn")
        assert fake_openai.chat_requests[3]["messages"][-1]["content"] == "plugin code two"


def test_json_logs_have_one_line_per_reload_saying_what_changed(agents: Path, fake_openai: FakeOpenAI) -> None:
    import json

    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--log-format", "json") as serve:
        serve.wait_ready()
        write(agents / "sales.yaml", spec("You are sales.", fake_openai.base_url))
        serve.wait_for(lambda: serve.agent("sales"), message="sales added")
        write(agents / "desk.yaml", spec("You are the new desk.", fake_openai.base_url))
        serve.wait_for(lambda: serve.agent("desk")["generation"] == 3, message="desk updated")
        serve.wait_for(lambda: serve.output().count('"reload"') >= 3, message="three reload lines")
        lines = [json.loads(line) for line in serve.output().splitlines() if line.startswith("{")]
        reloads = [line for line in lines if "reload" in line]
        assert [(r["reload"]["added"], r["reload"]["updated"], r["reload"]["removed"]) for r in reloads] == [
            (["desk"], [], []), (["sales"], [], []), ([], ["desk"], [])
        ]
        assert all(r["level"] == "info" and r["logger"] == "voice_runtime.serve" for r in reloads)
        assert "updated desk" in reloads[-1]["msg"]


def test_readyz_names_a_required_mcp_server_that_is_down_and_status_shows_each_servers_health(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    import json

    from mcp_servers.harness import stdio_command

    command, args = stdio_command(record=tmp_path / "calls.jsonl", name="tools")
    servers = (
        "mcp_servers:\n"
        f"  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n"
        "  billing: {command: /nonexistent/billing-mcp, required: true, connect_timeout: 2}\n"
    )
    serve = served
    write(serve.agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url) + servers)
    serve.wait_agent("desk")
    health = serve.wait_for(
        lambda: (lambda s: s if s["tools"]["state"] == "up" and s["billing"]["state"] == "down" else None)(
            serve.agent("desk")["mcp_servers"]), message="MCP health")
    assert "echo" in health["tools"]["tools"]
    assert "command not found: /nonexistent/billing-mcp" in health["billing"]["error"]
    code, body = serve.get("/readyz")
    assert code == 503
    assert "agent desk: required MCP server billing is down (command not found: /nonexistent/billing-mcp)" in body
    assert serve.metric('voice_runtime_mcp_server_up{agent="desk",server="tools"}') == 1.0
    assert serve.metric('voice_runtime_mcp_server_up{agent="desk",server="billing"}') == 0.0
    # livekit's own worker metrics are on the same port
    assert any(line.startswith("lk_agents_worker_load{") for line in serve.get("/metrics")[1].splitlines())


def _echo_agent(folder: Path, name: str, fake_openai: FakeOpenAI, record: Path) -> None:
    """Agent ``name``, whose MCP server ``tools`` records its calls in ``record``."""
    import json

    from mcp_servers.harness import stdio_command

    command, args = stdio_command(record=record, name="tools")
    write(folder / f"{name}.yaml", spec("You are the desk.", fake_openai.base_url)
          + f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n")


def _a_tool_call_reaches_the_mcp_server(serve: Serve, name: str, fake_openai: FakeOpenAI, record: Path, how: str) -> None:
    from mcp_servers.harness import read_records

    fake_openai.use_tool_then_answer("echo", {"text": f"via {how}"})
    serve.simulate(name, ["echo please"])
    serve.wait_for(lambda: len(fake_openai.chat_requests) >= 2, message="the tool turn")
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("echo", {"text": f"via {how}"})]
    assert fake_openai.chat_requests[1]["messages"][-1]["content"] == f"via {how}"
    serve.wait_for(
        lambda: serve.metric(f'voice_runtime_tool_calls_total{{agent="{name}",outcome="ok",server="tools",tool="echo"}}'),
        message="the call in /metrics")


@pytest.mark.parametrize(
    ("executor", "idle"), [("process", "1"), ("thread", "0")], ids=["process-prewarmed", "thread-shared-pool"],
)
def test_a_jobs_tool_call_reaches_the_mcp_server_with_every_executor(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI, executor: str, idle: str
) -> None:
    _echo_agent(agents, "desk", fake_openai, tmp_path / "calls.jsonl")
    with Serve(agents, "--executor", executor, "--idle-processes", idle) as serve:
        serve.wait_ready()
        _a_tool_call_reaches_the_mcp_server(serve, "desk", fake_openai, tmp_path / "calls.jsonl", executor)


def test_a_jobs_tool_call_reaches_the_mcp_server_from_a_process_started_for_the_call(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    """The process executor with no prewarmed process (serve's default, which the shared serve has)."""
    _echo_agent(served.agents, "cold", fake_openai, tmp_path / "calls.jsonl")
    served.wait_agent("cold")
    _a_tool_call_reaches_the_mcp_server(served, "cold", fake_openai, tmp_path / "calls.jsonl", "process")


def test_saving_identical_bytes_causes_no_reload(agents: Path, fake_openai: FakeOpenAI) -> None:
    text = spec("You are the desk.", fake_openai.base_url)
    write(agents / "desk.yaml", text)
    with Serve(agents, "--scan-interval", "0.3") as serve:
        serve.wait_ready()
        before = serve.metric('voice_runtime_config_reloads_total{result="success"}')
        for _ in range(3):
            write(agents / "desk.yaml", text)  # an editor's save with no change
            time.sleep(0.3)
        time.sleep(1.0)
        assert serve.metric('voice_runtime_config_reloads_total{result="success"}') == before
        assert serve.agent("desk")["generation"] == 1


def test_sigterm_drain_is_bounded_by_drain_timeout(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--drain-timeout", "2") as serve:
        serve.wait_ready()
        serve.simulate("desk", ["first", "much later"], gap_s=60.0)
        serve.wait_for(lambda: system_prompts_for(fake_openai, "first"), message="the call's first turn")
        started = time.monotonic()
        rc = serve.stop()
        assert rc == 0
        # 2 s of drain, then livekit shuts the job down; a simulated call is still in
        # its entrypoint, which livekit gives 15 s (a constant of 1.8.9) before cancelling
        assert time.monotonic() - started < 25
        assert system_prompts_for(fake_openai, "much later") == []


def test_tool_call_counts_survive_an_agent_added_later(tmp_path: Path, served: Serve, fake_openai: FakeOpenAI) -> None:
    serve = served
    _echo_agent(serve.agents, "counted", fake_openai, tmp_path / "calls.jsonl")
    fake_openai.use_tool_then_answer("echo", {"text": "count me"})
    metric = 'voice_runtime_tool_calls_total{agent="counted",outcome="ok",server="tools",tool="echo"}'
    serve.wait_agent("counted")
    serve.simulate("counted", ["echo please"])
    serve.wait_for(lambda: serve.metric(metric) == 1.0, message="the call in /metrics")
    # livekit's AgentServer.run() empties the metrics folder; a new agent starts one
    write(serve.agents / "later.yaml", spec("You are sales.", fake_openai.base_url))
    serve.wait_agent("later")
    assert serve.metric(metric) == 1.0


def test_serve_leaves_no_published_specs_behind_after_it_exits(tmp_path: Path, agents: Path, fake_openai: FakeOpenAI) -> None:
    import os

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        serve.wait_ready()
        published = list(scratch.glob("voice-runtime-*/agents/desk.json"))
        assert len(published) == 1  # what job processes read: expanded values, so private
        assert os.stat(published[0].parent.parent).st_mode & 0o077 == 0
        assert serve.stop() == 0
    assert list(scratch.glob("voice-runtime-*")) == []  # the state and metrics folders


def test_jobs_start_under_a_tmpdir_too_long_for_a_unix_socket(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """multiprocessing's forkserver socket lives under TMPDIR; a long TMPDIR (a CI
    workspace) made every job fail with 'AF_UNIX path too long'."""
    long_tmp = tmp_path / ("t" * 60) / ("m" * 30)
    long_tmp.mkdir(parents=True)
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, env={"TMPDIR": str(long_tmp)}) as serve:
        serve.wait_ready()
        serve.simulate("desk", ["hello there"])
        serve.wait_for(lambda: system_prompts_for(fake_openai, "hello there"), message="the call")
        assert "is too long for the job processes' unix socket; they use /tmp" in serve.output()
        assert serve.stop() == 0
    assert list(long_tmp.glob("voice-runtime-*")) == []


def test_status_under_unregistered_says_the_agent_is_ready_but_not_registered_with_livekit(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served  # --unregistered: no LiveKit server is ever contacted
    write(serve.agents / "unlisted.yaml", spec("You are the desk.", fake_openai.base_url))
    serve.wait_agent("unlisted")
    assert serve.agent("unlisted")["registered"] is False
    code, page = serve.get("/")
    assert code == 200 and "not registered with LiveKit" in page, page
    # ready means it takes calls: a simulated one is answered
    code, report = serve.post("/simulate?wait=1", b'{"agent": "unlisted", "turns": ["hi"]}', timeout=120)
    assert code == 200 and report["ok"], report


VOICE_DEFAULT_TURNS = (  # a voice pipeline leaving turn detection to livekit: its local end-of-turn model
    "apiVersion: voice-runtime/v1\nname: voice\ninstructions: You are the desk.\npipeline:\n"
    "  stt: {provider: deepgram, base_url: 'http://127.0.0.1:9/v1/listen', api_key: dg-key}\n"
    "  llm: {provider: openai, model: gpt-4o-mini, base_url: 'http://127.0.0.1:9/v1', api_key: sk-key}\n"
    "  tts: {provider: cartesia, base_url: 'http://127.0.0.1:9', api_key: ct-key, voice: v1}\n"
    "  vad: {provider: silero}\n"
)


def test_job_processes_start_without_the_turn_model_no_agent_uses_and_an_agent_added_later_that_uses_it_is_named(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served  # started with the resident agent alone, a text one
    assert "livekit's local end-of-turn model is not preloaded: no agent uses it" in serve.whole_output()
    write(serve.agents / "texter.yaml", spec("You are the desk.", fake_openai.base_url))
    serve.wait_agent("texter")
    serve.simulate("texter", ["hello?"])  # calls still run on processes forked without it
    serve.wait_for(lambda: system_prompts_for(fake_openai, "hello?"), message="a texter job")
    write(serve.agents / "voice.yaml", VOICE_DEFAULT_TURNS)
    serve.wait_agent("voice")
    serve.wait_for(lambda: "agent voice uses livekit's local end-of-turn model (turn_detection: livekit's default)"
                   in serve.output(), message="the warning")
    assert serve.output().count("agent voice uses livekit's local end-of-turn model") == 1
