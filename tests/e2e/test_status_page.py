"""The status page at GET / of serve's operator port, read by a real browser
(Debian's chromium, headless): what an operator sees, without JavaScript."""

from __future__ import annotations

import json
from pathlib import Path

from fakes.openai_chat import FakeOpenAI
from helpers import require_tool, write
from mcp_servers.harness import free_port, read_records, stdio_command
from serve_harness import Serve, spec

SECRET = "page-secret-7f3a91c2"


def read_page(url: str, screenshot: Path) -> tuple[str, dict[str, list[list[str]]]]:
    """Open the page in headless chromium with JavaScript off (the page must work
    without it): its HTML, the cells of each table's rows under the table's
    heading, and a screenshot."""
    from playwright.sync_api import sync_playwright

    chromium = require_tool("chromium", "apt-get install chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900}).new_page()
            page.goto(url)
            tables = {}
            for heading in page.locator("h2").all():
                table = heading.locator("xpath=following-sibling::*[1][self::table]")
                if table.count():
                    tables[heading.inner_text().split(" (")[0]] = [
                        [cell.inner_text().strip() for cell in row.locator("td").all()]
                        for row in table.locator("tbody tr").all()]
            page.screenshot(path=str(screenshot), full_page=True)
            return page.content(), tables
        finally:
            browser.close()


def desk_spec(fake: FakeOpenAI, command: str, args: list[str], down_port: int, extra: str = "") -> str:
    return spec("You are the desk.", fake.base_url, extra=(
        "mcp_servers:\n"
        f"  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n"
        f"  search: {{url: 'http://127.0.0.1:{down_port}/mcp?key=${{PAGE_TOKEN}}', connect_timeout: 1}}\n"
        + extra))


def test_status_page_shows_agents_a_down_server_a_simulated_tool_call_and_an_invalid_edit_without_secrets(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="tools")
    down_port = free_port()  # nothing listens there: the search server is down
    write(agents / "desk.yaml", desk_spec(fake_openai, command, args, down_port))
    fake_openai.use_tool_then_answer("echo", {"text": "from the page test"})
    with Serve(agents, env={"PAGE_TOKEN": SECRET}) as serve:
        serve.wait_ready()
        code, report = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["echo it"]}', timeout=120)
        assert code == 200, report
        assert [r["tool"] for r in read_records(record)] == ["echo"]
        # an invalid edit: the last good spec keeps serving, the page says where the mistake is
        write(agents / "desk.yaml", desk_spec(fake_openai, command, args, down_port, extra="voice: x\n"))
        serve.wait_for(lambda: serve.status()["last_reload"]["errors"], message="the invalid edit is reported")
        serve.wait_for(lambda: serve.agent("desk")["mcp_servers"]["search"]["state"] == "down",
                       message="search is down")
        errors = serve.status()["last_reload"]["errors"]

        screenshot = tmp_path / "status.png"
        dom, tables = read_page(serve.url("/"), screenshot)

    assert '<meta http-equiv="refresh"' in dom
    [agent] = tables["Agents"]
    assert agent[1:3] == ["1", "pipeline"] and "llm: openai/gpt-4o-mini" in agent[3] and agent[4] == "0", agent
    # the down server with its reason, the other up with its tools
    [search] = [r for r in tables["MCP servers"] if r[:2] == ["desk", "search"]]
    assert search[3] == "down" and "cannot connect" in search[4], search
    [tools] = [r for r in tables["MCP servers"] if r[:2] == ["desk", "tools"]]
    assert tools[2:4] == ["stdio", "up"] and "echo" in tools[5], tools
    # the tool call made through /simulate
    [call] = tables["Recent tool calls"]
    assert call[1:3] == ["desk", "tools"] and call[4] == "ok" and call[5].endswith(" ms"), call
    # the invalid edit, at its file:line:col
    where = f"{errors[0]['file']}:{errors[0]['line']}:{errors[0]['col']}"
    assert where.startswith(str(agents / "desk.yaml") + ":")
    assert where in dom
    assert SECRET not in dom
    assert "<script" not in dom
    assert '<a href="/talk/desk">talk</a>' in dom  # the browser call page of the agent
    assert screenshot.stat().st_size > 10_000  # chromium rendered it
