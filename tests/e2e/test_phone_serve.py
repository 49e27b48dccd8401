"""A call ended by the agent through a real `serve` (process executor, simulated
job): livekit's EndCallTool ends the job, and the hang-up is in the call report,
the answer of /simulate and /metrics; `chat` shows phone outcomes and stops when
the agent hung up; and `check` points at each bad key of a
``telephony:``/``turn_handling:``/``background_audio:`` block at file:line:col."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI, text, tool_call
from helpers import CLI, child_env, run_cli, write
from serve_harness import Serve, spec

from voice_runtime.session.chat import ChatPrinter

CLOSING = "Goodbye from the desk."


def test_end_call_in_a_served_call_ends_the_job_and_the_report_says_so(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the front desk.", fake_openai.base_url)
          + f"telephony: {json.dumps({'end_call': {'say': CLOSING}, 'max_call_seconds': 600})}\n")
    fake_openai.enqueue(tool_call("end_call", {}))
    with Serve(agents) as serve:
        serve.wait_ready()
        code, answer = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["That is all, bye."], "wait": True}).encode(), timeout=90)
        assert code == 200, answer
        report = answer["call_report"]
        assert report["end_reason"] == "end_call"
        assert [e["event"] for e in report["phone"]] == ["hang_up"] and report["phone"][0]["reason"] == "end_call"
        assert [(t["role"], t["text"]) for t in report["transcript"]][-1] == ("agent", CLOSING)
        # the model was offered livekit's end_call tool and asked nothing after it
        assert [t["function"]["name"] for t in fake_openai.chat_requests[0]["tools"]] == ["end_call"]
        assert len(fake_openai.chat_requests) == 1
        serve.wait_for(lambda: serve.metric('voice_runtime_call_ends_total{agent="desk",reason="end_call"}') == 1.0,
                       message="the hang-up counted")


@pytest.mark.timeout(300)  # a chat process imports livekit: slow on a loaded machine
def test_chat_shows_phone_outcomes_and_the_conversation_stops_when_the_agent_hangs_up(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    targets = [{"name": "billing", "to": "+15105550123", "when": "billing"}]
    write(agents / "desk.yaml", spec("You are the front desk.", fake_openai.base_url)
          + f"telephony: {json.dumps({'end_call': {'say': CLOSING}, 'transfer': targets})}\n")
    # chat has no phone line: the transfer fails and says why; then the model hangs up
    fake_openai.enqueue(tool_call("transfer_call", {"target": "billing"}), text("I cannot transfer you from here."),
                        tool_call("end_call", {}))

    shown = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json"],
                           input="billing please\nbye\nare you there?\n", capture_output=True, text=True,
                           timeout=240, env=child_env())
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    phone = [{k: v for k, v in line.items() if k not in ("type", "agent")} for line in lines if line["type"] == "phone"]
    assert phone == [{"event": "transfer", "kind": "cold", "target": "billing", "to": "+15105550123",
                      "outcome": "failed", "reason": "no phone line in this call"},
                     {"event": "hang_up", "reason": "end_call"}]
    # the third line is never sent: the call is over
    assert [line["text"] for line in lines if line["type"] == "reply"][-1] == CLOSING
    assert "are you there" not in json.dumps(fake_openai.chat_requests[-1]["messages"])
    [report] = [line["report"] for line in lines if line["type"] == "report"]
    assert report["end_reason"] == "end_call"
    assert [p["event"] for p in report["phone"]] == ["transfer", "hang_up"]
    # as chat prints them for a person
    printed = io.StringIO()
    printer = ChatPrinter("desk", as_json=False, out=printed)
    for line in lines:
        if line["type"] == "phone":
            printer("phone", {k: v for k, v in line.items() if k != "type"})
    assert printed.getvalue().splitlines() == [
        "  [phone] cold transfer to billing (+15105550123): failed (no phone line in this call)",
        "  [phone] hung up: end_call"]


def test_check_points_at_each_bad_phone_and_turn_key(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    write(folder / "desk.yaml", """\
apiVersion: voice-runtime/v1
instructions: You are the front desk.
pipeline:
  llm: {provider: openai, api_key: sk-x}
  text_only: true
telephony:
  transfer:
    - {name: billing, to: "555-1234", when: billing}
    - {name: desk, to: "sip:desk@pbx.example.com", when: desk, briefing: "x"}
    - {name: pbx, to: "sip:desk:hunter2-pw@pbx.example.com", when: pbx}
  voicemail: {action: leave_message}
  silence_timeout: {seconds: 1}
turn_handling:
  endpointing: {min_delay: 4, max_delay: 2}
  interruption: {mode: sometimes}
""")
    write(folder / "sounds.yaml", """\
apiVersion: voice-runtime/v1
instructions: You are the front desk.
pipeline:
  llm: {provider: openai, api_key: sk-x}
  text_only: true
background_audio:
  ambient: {file: sounds/office.ogg}
  thinking: {clip: keyboard-typing, file: typing.ogg}
""")
    result = run_cli("check", str(folder))
    assert result.rc == 1
    lines = result.stdout.splitlines() + result.stderr.splitlines()
    desk = str(folder / "desk.yaml")
    expected = [
        f"{desk}:8:27: telephony.transfer[0].to: must be an E.164 number",
        f"{desk}:10:23: telephony.transfer[2].to: must be an E.164 number",
        f"{desk}:9:7: telephony.transfer[1]: briefing: for a warm transfer only (mode: warm)",
        f"{desk}:11:3: telephony.voicemail: action leave_message needs a `message`",
        f"{desk}:12:30: telephony.silence_timeout.seconds: input should be greater than or equal to 3",
        f"{desk}:14:3: turn_handling.endpointing: min_delay is more than max_delay",
        f"{desk}:15:24: turn_handling.interruption.mode: input should be 'adaptive' or 'vad'",
        f"{folder / 'sounds.yaml'}:8:3: background_audio.thinking: give `clip` or `file`, one of them",
    ]
    for line in expected:
        assert any(got.startswith(line) for got in lines), (line, lines)
    assert "Traceback" not in result.stderr and "hunter2-pw" not in result.output  # a SIP password is not repeated
    # the file check runs once the block is otherwise valid
    write(folder / "sounds.yaml", (folder / "sounds.yaml").read_text().replace(", file: typing.ogg", ""))
    (folder / "desk.yaml").unlink()
    result = run_cli("check", str(folder))
    assert result.rc == 1
    assert f"{folder / 'sounds.yaml'}:7:19: background_audio.ambient.file: {folder / 'sounds' / 'office.ogg'}: " \
           "no such sound file" in result.stdout + result.stderr
    (folder / "sounds").mkdir()
    (folder / "sounds" / "office.ogg").write_bytes(b"OggS")
    assert run_cli("check", str(folder)).rc == 0


def test_tools_lists_the_built_in_phone_tools_the_model_gets_and_the_server_tool_they_hide(tmp_path: Path) -> None:
    from mcp_servers.harness import stdio_command

    folder = tmp_path / "agents"
    (tmp_path / "extra.json").write_text(json.dumps({"end_call": "A server's own end_call."}))
    command, args = stdio_command(extra_tools=tmp_path / "extra.json")
    telephony = {"end_call": {"say": CLOSING}, "transfer": [{"name": "billing", "to": "+15105550123", "when": "billing"}],
                 "dtmf": {"send": True, "collect": {"digits": 4}}}
    write(folder / "desk.yaml", spec("You are the front desk.", "http://127.0.0.1:9/v1")
          + f"telephony: {json.dumps(telephony)}\n"
          + f"mcp_servers:\n  desk: {json.dumps({'command': command, 'args': args})}\n")
    listed = run_cli("tools", folder, "--agent", "desk")
    assert listed.rc == 0, listed.output
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line and not line.startswith(("capab", "hidden"))}
    for name in ("end_call", "transfer_call", "send_dtmf", "collect_digits"):
        assert "built-in phone tool" in rows[name], listed.stdout
    assert "another line. Targets: billing" in rows["transfer_call"]
    # the server's end_call is not what the model gets (a session hides it), and tools says so
    assert rows["end_call"].count("end_call") == 2 and "server's own" not in rows["end_call"]
    assert "hidden: end_call from mcp:desk: the built-in phone tool of the same name wins" in listed.stdout
