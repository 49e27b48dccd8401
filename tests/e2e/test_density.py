"""One pool of job processes and one set of MCP connections for the whole serve
(issue 13), through real `serve` subprocesses with the process executor, real MCP
server processes, and a fake LiveKit server at the network boundary.

The tests that need one prewarmed job process and differ only in the agents they add
share one serve (``served``: each adds agents of its own, each with its own fake LLM);
a test that needs other options, a LiveKit server or its own exit starts its own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fakes.livekit_server import FakeLiveKit
from fakes.openai_chat import FakeOpenAI, text, tool_call
from helpers import write
from mcp_servers.harness import read_events, read_records, stdio_command
from serve_harness import Serve, spec, system_prompts_for


def _server_block(name: str, record: Path, *, shared: bool = True) -> str:
    command, args = stdio_command(record=record, name=name)
    return (f"mcp_servers:\n  {name}: {{command: {json.dumps(command)}, args: {json.dumps(args)}"
            + ("" if shared else ", shared: false") + "}\n")


def _call(serve: Serve, agent: str, turn: str) -> dict[str, Any]:
    code, report = serve.post("/simulate?wait=1", json.dumps({"agent": agent, "turns": [turn]}).encode(),
                              timeout=120)
    assert code == 200, report
    return report


def _idle(serve: Serve, count: int = 1) -> list[int]:
    return serve.wait_for(lambda: (pids := serve.status()["jobs"]["idle_pids"]) and len(pids) >= count and pids,
                          timeout=60, message=f"{count} prewarmed job process(es)")


def test_a_process_prewarmed_before_an_agent_existed_runs_its_call_with_its_own_spec_and_tools(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served
    a_record, b_record = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write(serve.agents / "alpha.yaml", spec("You are alpha.", fake_openai.base_url) + _server_block("alpha_tools", a_record))
    fake_openai.use_tool_then_answer("echo", {"text": "for the caller"})
    serve.wait_agent("alpha")
    [first] = _idle(serve)
    # bravo appears only now: no process was warmed for it
    write(serve.agents / "bravo.yaml", spec("You are bravo.", fake_openai.base_url) + _server_block("bravo_tools", b_record))
    serve.wait_for(lambda: any(a["name"] == "bravo" for a in serve.status()["agents"]), message="bravo served")
    bravo = _call(serve, "bravo", "echo please")
    assert bravo["pid"] == first  # the process prewarmed before bravo existed
    [second] = _idle(serve)  # the pool warmed another one meanwhile
    assert second != first
    alpha = _call(serve, "alpha", "echo please")
    assert alpha["pid"] == second
    # each call had its own agent's instructions and its own agent's MCP server
    assert system_prompts_for(fake_openai, "echo please")[:1] == ["You are bravo."]
    assert [r["tool"] for r in read_records(b_record)] == ["echo"]
    assert [r["tool"] for r in read_records(a_record)] == ["echo"]
    assert [c["server"] for c in bravo["turns"][0]["tool_calls"]] == ["bravo_tools"]
    assert [c["server"] for c in alpha["turns"][0]["tool_calls"]] == ["alpha_tools"]
    assert "no warmed process available" not in serve.output()


def test_ten_agents_with_one_identical_stdio_server_block_start_one_server_process(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    block = _server_block("clock", record)
    for i in range(10):
        write(agents / f"agent{i}.yaml", spec(f"You are agent {i}.", fake_openai.base_url) + block)
    fake_openai.use_tool_then_answer("echo", {"text": "shared"})
    with Serve(agents, "--idle-processes", "2") as serve:
        serve.wait_ready()
        _idle(serve, 2)
        for i in (0, 4, 9):
            report = _call(serve, f"agent{i}", "echo please")
            assert report["turns"][0]["tool_calls"][0]["outcome"] == "ok", report
        spawned = {e["pid"] for e in read_events(record)}
        assert len(spawned) == 1, read_events(record)
        # every call reached that one process, and it is serve's own child
        assert {r["pid"] for r in read_records(record)} == spawned
        assert psutil.Process(spawned.pop()).ppid() == serve.proc.pid


def test_a_shared_false_server_is_started_for_each_call_and_never_ahead(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served
    record = tmp_path / "calls.jsonl"
    write(serve.agents / "stateful.yaml", spec("You are the desk.", fake_openai.base_url)
          + _server_block("session_state", record, shared=False))
    fake_openai.use_tool_then_answer("echo", {"text": "mine"})
    serve.wait_agent("stateful")
    _idle(serve)
    time.sleep(1.0)
    assert read_events(record) == []  # not warmed by serve: it belongs to a call
    first = _call(serve, "stateful", "echo please")
    second = _call(serve, "stateful", "echo please")
    calls = read_records(record)
    assert len(calls) == 2 and calls[0]["pid"] != calls[1]["pid"]
    # each server was the child of its call's job process
    assert len(read_events(record)) == 2
    assert first["pid"] != second["pid"]


# code in a job process that asks serve's MCP gateway for calls itself, with the token
# every job process can read: what a plugin (or anything it runs) could do
GATEWAY_PROBE = '''
import glob, json, os, tempfile
from pathlib import Path
import voice_runtime

def _tool():
    from livekit.agents import function_tool, get_job_context

    @function_tool
    async def probe_gateway(key: str, tool: str) -> str:
        """Ask serve's MCP gateway for a tool call, as this job."""
        from voice_runtime.mcp.gateway import GatewayPool

        [address] = glob.glob(os.path.join(tempfile.gettempdir(), "voice-runtime-*", "gateway.json"))
        pool = GatewayPool.from_state_dir(Path(address).parent, get_job_context().job.id)
        try:
            status, answer = await pool.client.request(
                "call", {"key": key, "tool": tool, "arguments": {"text": "probe " + tool}})
        finally:
            await pool.aclose()
        return json.dumps({"status": status, "refused": answer.get("refused"), "text": answer.get("text")})
    return probe_gateway

@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("probe.gateway", _tool, description="asks serve's MCP gateway directly")
'''


def test_a_job_process_reaches_through_serves_gateway_only_its_own_agents_blocks_and_shown_tools(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    from voice_runtime.mcp.pool import server_key
    from voice_runtime.plugins.manager import make_plugin_manager
    from voice_runtime.spec.loader import load_folder

    serve, agents = served, served.agents  # its plugins folder holds GATEWAY_PROBE
    desk_record, other_record = tmp_path / "desk.jsonl", tmp_path / "other.jsonl"
    command, args = stdio_command(record=desk_record, name="desk_tools")
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url, extra=(
        "tools: [probe.gateway]\nmcp_servers:\n"
        f"  desk_tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}, allowed_tools: [echo]}}\n")))
    write(agents / "other.yaml", spec("You are another tenant.", fake_openai.base_url)
          + _server_block("other_tools", other_record))
    specs = {s.name: s for s in load_folder(agents, make_plugin_manager(agents.parent / "plugins")).specs}
    probes = [(server_key(specs["desk"], "desk_tools"), "echo"),  # desk's own, shown: lent
              (server_key(specs["desk"], "desk_tools"), "get_weather"),  # outside allowed_tools
              (server_key(specs["other"], "other_tools"), "echo")]  # another agent's block
    for key, tool in probes:
        fake_openai.enqueue(tool_call("probe_gateway", {"key": key, "tool": tool}), text("done"))
    serve.wait_agent("desk")
    serve.wait_agent("other")
    _idle(serve)
    code, report = serve.post("/simulate?wait=1", json.dumps(
        {"agent": "desk", "turns": ["probe 1", "probe 2", "probe 3"]}).encode(), timeout=120)
    assert code == 200, report
    answers = [json.loads(turn["tool_calls"][0]["result"]) for turn in report["turns"]]
    assert [a["status"] for a in answers] == [200, 403, 403], answers
    assert answers[0]["text"] == "probe echo"
    assert "tool 'get_weather' of MCP server desk_tools is not one agent desk's model is shown" in (
        answers[1]["refused"])
    assert "not agent desk's" in answers[2]["refused"]
    assert serve.metric('voice_runtime_gateway_refused_total{agent="desk",reason="tool"}') == 1
    assert serve.metric('voice_runtime_gateway_refused_total{agent="desk",reason="block"}') == 1
    assert "MCP gateway: job mock-job-" in serve.output() and "probe get_weather" not in serve.output()
    assert [r["args"] for r in read_records(desk_record)] == [{"text": "probe echo"}]
    assert read_records(other_record) == []


@pytest.fixture
def livekit() -> Iterator[FakeLiveKit]:
    fake = FakeLiveKit()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


# livekit answers "unavailable" itself, without asking serve, while the machine's CPU
# load is over --load-threshold: on a busy test machine the offers a test expects serve
# to refuse (and log) would never reach it
BUSY_MACHINE = ("--load-threshold", "1")


def _connected(fake: FakeLiveKit) -> dict[str, str]:
    return {"LIVEKIT_URL": fake.url, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "devsecret-" + "x" * 32}


def test_dispatch_metadata_registers_one_name_and_routes_each_job_to_the_agent_it_names(
    agents: Path, fake_openai: FakeOpenAI, livekit: FakeLiveKit
) -> None:
    for name in ("alpha", "bravo"):
        write(agents / f"{name}.yaml", spec(f"You are {name}.", fake_openai.base_url))
    with Serve(agents, "--dispatch", "metadata", "--agent-name", "tenants", "--idle-processes", "1", *BUSY_MACHINE,
               env=_connected(livekit), unregistered=False) as serve:
        serve.wait_ready()
        assert livekit.registered_names() == ["tenants"]  # one registration for the whole serve
        accepted = livekit.offer("AJ_bravo_1", "tenants", metadata=json.dumps({"agent": "bravo"}))
        assert accepted.available
        serve.wait_for(lambda: "job AJ_bravo_1: agent bravo generation 1" in serve.output(),
                       message="the job routed to bravo")
        unknown = livekit.offer("AJ_nobody_1", "tenants", metadata=json.dumps({"agent": "nobody"}))
        assert not unknown.available
        unnamed = livekit.offer("AJ_unnamed_1", "tenants", metadata="")
        assert not unnamed.available
        out = serve.output()
        assert "job AJ_nobody_1 refused: agent 'nobody' is not served here" in out
        assert "job AJ_unnamed_1 refused: the job names no agent" in out
        assert serve.metric('voice_runtime_jobs_refused_total{reason="unknown_agent"}') == 1
        assert serve.metric('voice_runtime_jobs_refused_total{reason="no_agent"}') == 1
        assert "AJ_nobody_1: agent" not in out


def test_dispatch_metadata_lets_the_backend_outrank_a_callers_attribute_and_route_allow_bound_what_a_job_reaches(
    agents: Path, fake_openai: FakeOpenAI, livekit: FakeLiveKit
) -> None:
    for name in ("lobby", "tenant-a", "admin"):
        write(agents / f"{name}.yaml", spec(f"You are {name}.", fake_openai.base_url))
    with Serve(agents, "--dispatch", "metadata", "--agent-name", "tenants", "--route-allow", "lobby,tenant-*",
               "--idle-processes", "1", *BUSY_MACHINE, env=_connected(livekit), unregistered=False) as serve:
        serve.wait_ready()
        _idle(serve)
        # without --route-from-attributes an attribute alone routes nowhere
        assert not livekit.offer("AJ_attr_1", "tenants", attributes={"agent": "tenant-a"}).available
        # admin is served, but no --route-allow pattern reaches it
        assert not livekit.offer("AJ_admin_1", "tenants", metadata=json.dumps({"agent": "admin"})).available
        # a caller that set its own `agent` attribute: the room metadata (the backend's) decides
        assert livekit.offer("AJ_room_1", "tenants", room_metadata=json.dumps({"agent": "lobby"}),
                             attributes={"agent": "admin"}).available
        serve.wait_for(lambda: "job AJ_room_1: agent lobby generation 1" in serve.output(),
                       message="the job routed by the room metadata")
        out = serve.output()
        assert "job AJ_attr_1 refused: the job names no agent" in out
        assert "job AJ_admin_1 refused: the dispatch metadata names agent \"admin\", which no --route-allow" in out
        assert serve.metric('voice_runtime_jobs_refused_total{reason="not_allowed"}') == 1
        assert serve.metric('voice_runtime_jobs_refused_total{reason="no_agent"}') == 1
        assert "AJ_admin_1: agent" not in out and "agent admin generation" not in out
        # POST /simulate honours the same bound
        code, answer = serve.post("/simulate", json.dumps({"agent": "admin", "turns": ["hi"]}).encode())
        assert code == 403 and "--route-allow" in answer["error"]


def test_dispatch_by_name_registers_every_agent_and_runs_their_jobs_on_the_one_pool(
    agents: Path, fake_openai: FakeOpenAI, livekit: FakeLiveKit
) -> None:
    for name in ("alpha", "bravo", "charlie"):
        write(agents / f"{name}.yaml", spec(f"You are {name}.", fake_openai.base_url))
    with Serve(agents, "--idle-processes", "1", env=_connected(livekit), unregistered=False) as serve:
        serve.wait_ready()
        assert sorted(livekit.registered_names()) == ["alpha", "bravo", "charlie"]
        [prewarmed] = _idle(serve)
        assert livekit.offer("AJ_charlie_1", "charlie").available
        serve.wait_for(lambda: "job AJ_charlie_1: agent charlie generation 1" in serve.output(),
                       message="the job routed to charlie")
        # one pool for all three: the call took the process prewarmed for any of them
        serve.wait_for(lambda: prewarmed not in serve.status()["jobs"]["idle_pids"], message="the prewarmed one taken")
        assert "no warmed process available" not in serve.output()
        # a removed agent's registration goes away; the others stay
        (agents / "alpha.yaml").unlink()
        serve.wait_for(lambda: sorted(livekit.registered_names()) == ["bravo", "charlie"],
                       message="alpha unregistered")


MEMORY_HOG = '''
import asyncio
import voice_runtime

def _tool():
    from livekit.agents import function_tool

    @function_tool
    async def hog_memory() -> str:
        """Use a lot of memory."""
        held = [bytes([i % 251]) * (64 * 1024 * 1024) for i in range(12)]  # 768 MiB, every page touched
        await asyncio.sleep(30)  # held until livekit's memory monitor (every 5 s) acts
        return str(len(held))
    return hog_memory

@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("hog.memory", _tool, description="uses a lot of memory")
'''


def test_with_full_load_calls_a_call_in_progress_is_the_load_livekit_and_the_metrics_see(
    agents: Path, fake_openai: FakeOpenAI, livekit: FakeLiveKit
) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    # one call is full load: LiveKit must stop sending calls here while it runs
    with Serve(agents, "--full-load-calls", "1", "--load-threshold", "0.9", env=_connected(livekit),
               unregistered=False) as serve:
        serve.wait_ready()
        assert serve.metric("voice_runtime_load_threshold") == 0.9
        serve.simulate("desk", ["first", "later"], gap_s=20.0)
        serve.wait_for(lambda: system_prompts_for(fake_openai, "first"), message="the call's first turn")
        serve.wait_for(lambda: serve.metric("voice_runtime_load") == 1.0, message="load 1.0 in /metrics")

        def full_while_calling() -> bool:
            from livekit.protocol import agent

            updates = [m.update_worker for name, m in list(livekit.messages)
                       if name == "desk" and m.WhichOneof("message") == "update_worker"]
            return any(u.load == 1.0 and u.job_count == 1 and u.status == agent.WorkerStatus.WS_FULL for u in updates)

        serve.wait_for(full_while_calling, message="LiveKit told the replica is full (load 1.0, one job)")


def test_a_call_over_the_job_memory_limit_is_ended_and_counted(served: Serve, fake_openai: FakeOpenAI) -> None:
    serve = served  # --job-memory-limit-mb 600, and its plugins folder holds MEMORY_HOG
    write(serve.agents / "hog.yaml", spec("You are the desk.", fake_openai.base_url, extra="tools: [hog.memory]\n"))
    fake_openai.use_tool_then_answer("hog_memory", {})
    serve.wait_agent("hog")
    _idle(serve)
    killed = serve.status()["jobs"]["killed_for_memory"]
    code, report = serve.post("/simulate?wait=1", json.dumps({"agent": "hog", "turns": ["hog"]}).encode(),
                              timeout=120)
    assert code == 502 and not report["ok"], report
    serve.wait_for(lambda: serve.metric('voice_runtime_jobs_memory_killed_total{agent="hog"}') == 1,
                   message="the memory kill counted")
    assert "exceeded memory limit" in serve.output()
    assert serve.status()["jobs"]["killed_for_memory"] == killed + 1
    assert serve.get("/healthz")[0] == 200  # serve itself is unharmed


def test_a_memory_limit_below_an_idle_process_makes_serve_not_ready_and_counts_no_call(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--idle-processes", "1", "--job-memory-limit-mb", "20") as serve:
        serve.wait_for(lambda: serve.get("/readyz")[0] == 503 and "before any call" in serve.get("/readyz")[1],
                       timeout=60, message="/readyz naming the memory limit")
        assert "over --job-memory-limit-mb 20, before any call" in serve.output()
        assert serve.status()["jobs"]["killed_for_memory"] == 0  # no call was killed


def test_readyz_is_not_ready_while_draining_so_traffic_moves_away(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--drain-timeout", "30") as serve:
        serve.wait_ready()
        serve.simulate("desk", ["first", "later"], gap_s=20.0)
        serve.wait_for(lambda: system_prompts_for(fake_openai, "first"), message="the call's first turn")
        serve.proc.send_signal(__import__("signal").SIGTERM)
        serve.wait_for(lambda: "stopping: draining" in serve.get("/readyz")[1], message="/readyz while draining")
        assert serve.get("/readyz")[0] == 503
        assert serve.get("/healthz")[0] == 200  # alive: the drain goes on


def test_status_for_an_agent_that_is_not_served_is_a_404(served: Serve, fake_openai: FakeOpenAI) -> None:
    serve = served
    write(serve.agents / "frontdesk.yaml", spec("You are the desk.", fake_openai.base_url))
    serve.wait_agent("frontdesk")
    code, body = serve.get("/status?agent=frontdesk")
    assert code == 200 and [a["name"] for a in json.loads(body)["agents"]] == ["frontdesk"]
    code, body = serve.get("/status?agent=frontdsek")
    assert code == 404 and "frontdsek" in json.loads(body)["error"]


@pytest.mark.parametrize(("args", "says"), [
    (["--agent-name", "tenants"], "--agent-name is the one name of --dispatch metadata"),
    (["--route-from-attributes"], "--route-from-attributes is for --dispatch metadata"),
    (["--route-allow", "billing"], "--route-allow is for --dispatch metadata"),
    (["--dispatch", "metadata", "--route-allow", "billing,"], "--route-allow has an empty pattern"),
    (["--dispatch", "metadata", "--agent-name", ""], "is not an agent name"),
    (["--dispatch", "metadata", "--agent-name", "a\nb"], "is not an agent name"),
])
def test_dispatch_options_that_cannot_work_are_usage_errors(agents: Path, args: list[str], says: str) -> None:
    from helpers import run_cli

    result = run_cli("serve", str(agents), "--unregistered", *args)
    assert result.rc == 2 and says in result.stderr and "Traceback" not in result.stderr


# the shared serve (``served``): one prewarmed process; the memory limit is the one test's
# of it, far above what a job process uses; the plugins two tests use (inert for the rest)
SHARED_SERVE_ARGS = ("--idle-processes", "1", "--job-memory-limit-mb", "600")
SHARED_SERVE_PLUGINS = {"probe.py": GATEWAY_PROBE, "hog.py": MEMORY_HOG}
