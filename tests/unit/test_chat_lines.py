"""The lines `chat` prints for a person (session/chat.py ChatPrinter)."""

from __future__ import annotations

import io

from voice_runtime.session.chat import ChatPrinter


def test_a_pretty_printed_json_tool_result_is_shown_on_one_line_with_single_spaces_and_its_strings_kept() -> None:
    out = io.StringIO()
    printer = ChatPrinter("desk", as_json=False, out=out)

    printer("tool_result", {"tool": "get_current_time", "outcome": "ok", "latency_ms": 21.44,
                            "result": '{\n  "timezone": "UTC",\n  "note": "two  spaces"\n}'})

    # as the README shows it (mcp-server-time indents its JSON); before: '{   "timezone": ...'
    assert out.getvalue() == '  <- get_current_time ok in 21.4 ms: { "timezone": "UTC", "note": "two  spaces" }\n'
