"""`voice-runtime check` on bad input: compiler-style errors, exit 1, never a traceback.

Everything goes through the real CLI in a subprocess, on real files in a temporary
folder. Inputs that attack the parser (huge, deep, alias bombs...) are run one per
process so each run's wall time and peak RSS can be held to the acceptance bounds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import REPO, Measured, assert_wall_within, run_cli, run_cli_measured, write

MAX_RSS_MB = 200.0
# Wall time is held to a ratio of a check of one small valid spec measured in the same
# module (helpers.assert_wall_within): an input that made the parser blow up (an alias
# bomb expanded, a deep document recursed) costs many times the baseline.
DEEP = "nesting is too deep (more than 64 levels are not allowed)"
HEAD = "apiVersion: voice-runtime/v1\n"
ERROR_LINE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<rest>.*)$")


def assert_clean_failure(result, *, rc: int = 1) -> None:
    assert result.rc == rc, result.output
    assert "Traceback" not in result.output, result.output


# -- inputs that attack the parser: one process each, bounded ---------------------


def _alias_bomb() -> str:
    lines = [HEAD.rstrip(), 'a0: &a0 "lol"']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\ninstructions: hi\n"


def _deep_flow(levels: int) -> str:
    return HEAD + "x: " + "[" * levels + "]" * levels + "\n"


def _deep_block_sequence(levels: int) -> str:
    return HEAD + "x:\n" + "- " * levels + "a\n"


def _deep_block_mapping(max_bytes: int) -> tuple[str, int]:
    """One more indented `k:` per line, as many levels as fit in max_bytes."""
    lines, size = [HEAD.rstrip()], len(HEAD)
    while size + len(lines) + 3 < max_bytes:
        line = " " * (len(lines) - 1) + "k:"
        lines.append(line)
        size += len(line) + 1
    lines[-1] += " a"
    return "\n".join(lines) + "\n", len(lines) - 1


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    target: str = "agents"  # what `check` is given, relative to the test folder
    expected: str = ""  # the whole error line, "file:line:col: [key.path: ]message"


_block_mapping, BLOCK_LEVELS = _deep_block_mapping(1_000_000)

CASES = [
    Case(
        "empty-file",
        {"empty.yaml": ""},
        expected="agents/empty.yaml:1:1: file is empty; a spec is a mapping that starts with `apiVersion: voice-runtime/v1`",
    ),
    Case(
        "root-is-a-list",
        {"list.yaml": "- apiVersion: voice-runtime/v1\n- name: x\n"},
        expected="agents/list.yaml:1:1: the top level of a spec must be a mapping of keys, not a list",
    ),
    Case(
        "root-is-a-scalar",
        {"scalar.yaml": "just a sentence\n"},
        expected="agents/scalar.yaml:1:1: the top level of a spec must be a mapping of keys, not a single value (str)",
    ),
    Case(
        "yaml-syntax-error",
        {"syntax.yaml": HEAD + "instructions: a: b\n"},
        expected="agents/syntax.yaml:2:16: invalid YAML: a ':' here, inside a value: quote a value that holds ': ' "
        "(\"...\"), or if this is a nested key, indent it under a key that has no value on its own line",
    ),
    Case(
        "tab-indentation",
        {"tabs.yaml": HEAD + "pipeline:\n\tllm: {provider: openai}\n"},
        expected="agents/tabs.yaml:3:1: invalid YAML: a tab here: YAML does not allow tabs for indentation; use spaces",
    ),
    Case(
        "ten-megabyte-file",
        {"big.yaml": HEAD + ("# " + "x" * 97 + "\n") * (10 * 1024 * 1024 // 100)},
        expected="agents/big.yaml:1:1: file is 10.0 MiB; the limit is 1024 KiB",
    ),
    Case(
        # 9 levels of 9 aliases; reported at the anchored value being repeated
        "alias-bomb",
        {"bomb.yaml": _alias_bomb()},
        expected="agents/bomb.yaml:2:5: the document expands to more than 20000 values (repeated aliases?)",
    ),
    Case(
        # level 65 (the first one over the limit) opens at column 3 + 65
        "flow-nesting-10000",
        {"deep.yaml": _deep_flow(10_000)},
        expected=f"agents/deep.yaml:2:68: {DEEP}",
    ),
    Case(
        # `- - - ...`: level 65 starts at column 1 + 2 * 64
        "block-sequence-nesting-10000",
        {"deep.yaml": _deep_block_sequence(10_000)},
        expected=f"agents/deep.yaml:3:129: {DEEP}",
    ),
    Case(
        # as many indented block mappings as fit under the size limit (~1,400);
        # level d opens on line 2 + d at column d + 1
        "block-mapping-nesting-under-size-limit",
        {"deep.yaml": _block_mapping},
        expected=f"agents/deep.yaml:67:66: {DEEP}",
    ),
    Case(
        "python-object-tag",
        {"tag.yaml": HEAD + 'instructions: hi\ngreeting: !!python/object/apply:os.system ["touch pwned"]\nrealtime: {provider: openai}\n'},
        expected="agents/tag.yaml:3:11: greeting: YAML tag '!!python/object/apply:os.system' is not allowed: "
        "specs hold plain data only",
    ),
    Case(
        "invalid-utf8",
        {"latin1.yaml": HEAD.encode() + b"instructions: hi\ngreeting: \"caf\xe9\"\n"},
        expected="agents/latin1.yaml:3:15: file is not valid UTF-8 (byte 0xe9); save it as UTF-8",
    ),
    Case(
        "duplicate-key",
        {"dup.yaml": HEAD + "instructions: hi\nrealtime:\n  provider: openai\n  model: a\n  model: b\n"},
        expected="agents/dup.yaml:6:3: duplicate key 'model' (the mapping starting at line 4 already has it)",
    ),
    Case(
        "folder-without-specs",
        {"README.md": "no specs here\n", "notes.txt": "x\n"},
        expected="agents:1:1: no spec files (*.yaml, *.yml) in this directory",
    ),
]


CASES_BY_ID = {c.id: c for c in CASES}


@dataclass
class Run:
    case: Case
    folder: Path
    measured: Measured


@pytest.fixture(scope="module")
def baseline_check_s(tmp_path_factory) -> float:
    """The wall time of `check` on one small valid spec, in this process's conditions."""
    folder = tmp_path_factory.mktemp("baseline")
    write(folder / "agents/desk.yaml", HEAD + "instructions: You are the desk.\n"
          "pipeline:\n  llm: {provider: openai, model: gpt-4o-mini, api_key: sk-test}\n  text_only: true\n")
    measured = run_cli_measured("check", "agents", cwd=folder, env={"VOICE_RUNTIME_DISABLE_PLUGINS": None})
    assert measured.result.rc == 0, measured.result.output
    return measured.wall_s


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def bad_run(request, tmp_path_factory) -> Run:
    case: Case = request.param
    folder = tmp_path_factory.mktemp(case.id)
    if case.target == "agents":
        (folder / "agents").mkdir()
    for name, text in case.files.items():
        write(folder / "agents" / name, text)
    return Run(case, folder, run_cli_measured("check", case.target, cwd=folder, env={"VOICE_RUNTIME_DISABLE_PLUGINS": None}))


def test_bad_input_exits_1_without_a_traceback(bad_run: Run) -> None:
    assert_clean_failure(bad_run.measured.result)


def test_bad_input_is_checked_in_a_few_times_a_valid_specs_time_and_200_mb(bad_run: Run, baseline_check_s: float) -> None:
    m = bad_run.measured
    assert m.result.rc == 1, m.result.output
    assert_wall_within(m, baseline_check_s, bad_run.case.id)
    assert m.peak_rss_mb < MAX_RSS_MB, f"{bad_run.case.id}: peak RSS {m.peak_rss_mb:.0f} MB"


def test_bad_input_is_reported_at_its_exact_file_line_col(bad_run: Run) -> None:
    out = bad_run.measured.result.stdout.splitlines()
    assert bad_run.case.expected in out, "\n".join(out)
    assert out[-1] == "found 1 error in 1 file"


def test_python_object_tag_is_never_executed(tmp_path: Path) -> None:
    write(tmp_path / "agents/tag.yaml", CASES_BY_ID["python-object-tag"].files["tag.yaml"])
    result = run_cli("check", "agents", cwd=tmp_path)
    assert_clean_failure(result)
    assert "YAML tag '!!python/object/apply:os.system' is not allowed" in result.stdout
    assert not (tmp_path / "pwned").exists()


def test_deep_block_mapping_case_really_is_deep_and_under_the_size_limit() -> None:
    assert BLOCK_LEVELS > 1000
    assert len(_block_mapping.encode()) < 1024 * 1024


def test_nesting_just_over_the_limit_is_reported_where_level_65_starts(tmp_path: Path) -> None:
    """The locations the 10,000-level cases expect are the ones shallow nesting gets."""
    write(tmp_path / "agents/flow.yaml", _deep_flow(70))
    write(tmp_path / "agents/map.yaml", _deep_block_mapping(3000)[0])
    write(tmp_path / "agents/seq.yaml", _deep_block_sequence(70))
    result = run_cli("check", "agents", cwd=tmp_path)
    assert_clean_failure(result)
    assert result.stdout.splitlines() == [
        f"agents/flow.yaml:2:68: {DEEP}",
        f"agents/map.yaml:67:66: {DEEP}",
        f"agents/seq.yaml:3:129: {DEEP}",
        "found 3 errors in 3 files",
    ]


def test_a_file_with_only_comments_is_reported_as_empty_not_as_a_python_type(tmp_path: Path) -> None:
    write(tmp_path / "agents/new.yaml", "# yaml-language-server: $schema=./agent.schema.json\n")
    result = run_cli("check", "agents", cwd=tmp_path)
    assert_clean_failure(result)
    first = result.stdout.splitlines()[0]
    assert first.startswith("agents/new.yaml:1:1: "), first
    assert "NoneType" not in first
    assert "apiVersion: voice-runtime/v1" in first


# -- spec-level mistakes: one folder, one run, every file reported -----------------

SPECS: dict[str, str] = {
    "modle.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
greting: hello
pipeline:
  text_only: true
  llm:
    - provider: openai
      modle: gpt-4.1-mini
""",
    "nollm.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  text_only: true
""",
    "badprov.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  stt: {provider: whisper}
  llm: {provider: openai}
  tts: {model: sonic-2}
""",
    "badtool.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  text_only: true
  llm: {provider: openai}
tools: [clock.now, clock.nope]
""",
    "unset.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  text_only: true
  llm: {provider: openai, api_key: "${VR_TEST_UNSET}"}
mcp_servers:
  search:
    url: https://example.com/mcp
    headers: {Authorization: "Bearer ${VR_TEST_TOKEN} ${VR_TEST_MISSING}"}
""",
    "nomode.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
""",
    "both.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
instructions_file: prompts/p.md
realtime: {provider: openai}
""",
    "nofile.yaml": """\
apiVersion: voice-runtime/v1
instructions_file: prompts/nope.md
realtime: {provider: openai}
""",
    "nostt.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  llm: {provider: openai}
  tts: {provider: cartesia}
""",
    "notts.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  llm: {provider: openai}
""",
    "ftp.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
realtime: {provider: openai}
mcp_servers:
  files:
    url: ftp://example.com/mcp
""",
    "neither.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
realtime: {provider: openai}
mcp_servers:
  files:
    timeout: 5
""",
    "dupa.yaml": """\
apiVersion: voice-runtime/v1
name: same
instructions: hi
realtime: {provider: openai}
""",
    "dupb.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
name: same
realtime: {provider: openai}
""",
    "textonly.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  llm: {provider: openai}
  text_only: true
""",
    "callref.yaml": """\
apiVersion: voice-runtime/v1
instructions: "Caller ${call.caler}"
context:
  caller: {from: "participant:sip.phoneNumber"}
realtime: {provider: openai}
mcp_servers:
  crm:
    url: "https://${call.caller}.example.com/mcp"
  local:
    command: "run ${call.caller}"
""",
    "calldecl.yaml": """\
apiVersion: voice-runtime/v1
instructions: hi
context:
  caller: {from: "cookie:x"}
  pin: {from: "room:pin", required: true, default: "0"}
  bad-name: {from: "room:x"}
realtime: {provider: openai}
mcp_servers:
  crm:
    url: "https://crm.example.com/mcp"
    headers: {Authorization: "Bearer ${call.caller}"}
    shared: true
""",
}
SPEC_ENV = {
    "VR_TEST_UNSET": None,
    "VR_TEST_MISSING": None,
    "VR_TEST_TOKEN": "tok-canary-456",
    "VOICE_RUNTIME_DISABLE_PLUGINS": None,
}


@dataclass
class FolderRun:
    folder: Path
    text: Measured
    json: dict


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory) -> FolderRun:
    folder = tmp_path_factory.mktemp("specs")
    for name, text in SPECS.items():
        write(folder / "agents" / name, text)
    write(folder / "agents/prompts/p.md", "be kind\n")
    plugins = str(REPO / "plugins")
    text = run_cli_measured("check", "agents", "--plugins", plugins, cwd=folder, env=SPEC_ENV)
    as_json = run_cli("check", "agents", "--plugins", plugins, "--format", "json", cwd=folder, env=SPEC_ENV)
    assert_clean_failure(as_json)
    return FolderRun(folder, text, json.loads(as_json.stdout))


def lines(run: FolderRun) -> list[str]:
    return run.text.result.stdout.splitlines()


def test_spec_errors_exit_1_without_a_traceback_within_bounds(spec_run: FolderRun, baseline_check_s: float) -> None:
    assert_clean_failure(spec_run.text.result)
    assert_wall_within(spec_run.text, baseline_check_s, "the folder of bad specs")
    assert spec_run.text.peak_rss_mb < MAX_RSS_MB


def test_unknown_key_suggests_the_closest_valid_key(spec_run: FolderRun) -> None:
    assert "agents/modle.yaml:3:1: greting: unknown key 'greting'; did you mean 'greeting'?" in lines(spec_run)
    assert "agents/modle.yaml:8:7: pipeline.llm[0].modle: unknown key 'modle'; did you mean 'model'?" in lines(spec_run)


def test_missing_required_key_points_at_its_parent_mapping(spec_run: FolderRun) -> None:
    assert "agents/nollm.yaml:3:1: pipeline.llm: required key is missing" in lines(spec_run)


def test_unknown_provider_lists_the_available_ones(spec_run: FolderRun) -> None:
    assert (
        "agents/badprov.yaml:4:19: pipeline.stt.provider: unknown stt provider 'whisper'; available: deepgram, openai"
        in lines(spec_run)
    )


def test_missing_provider_lists_the_available_ones_at_the_key(spec_run: FolderRun) -> None:
    assert (
        "agents/badprov.yaml:6:3: pipeline.tts: `provider` is required; available tts providers: cartesia, openai"
        in lines(spec_run)
    )


def test_unknown_tool_lists_the_available_tools(spec_run: FolderRun) -> None:
    assert (
        "agents/badtool.yaml:6:20: tools[1]: unknown tool 'clock.nope'; available: clock.days_until, clock.now"
        in lines(spec_run)
    )


def test_unset_variable_is_named_at_its_location(spec_run: FolderRun) -> None:
    assert (
        "agents/unset.yaml:5:36: pipeline.llm.api_key: environment variable VR_TEST_UNSET is not set "
        "(use ${VR_TEST_UNSET:-default} to give a default)" in lines(spec_run)
    )
    assert (
        "agents/unset.yaml:9:30: mcp_servers.search.headers.Authorization: environment variable VR_TEST_MISSING "
        "is not set (use ${VR_TEST_MISSING:-default} to give a default)" in lines(spec_run)
    )


def test_unset_variable_error_never_prints_the_value_of_a_set_one(spec_run: FolderRun) -> None:
    assert "VR_TEST_MISSING" in spec_run.text.result.stdout  # the string was looked at
    assert "tok-canary-456" not in spec_run.text.result.output
    assert "tok-canary-456" not in json.dumps(spec_run.json)


def test_agent_needs_realtime_or_pipeline(spec_run: FolderRun) -> None:
    assert "agents/nomode.yaml:1:1: an agent needs `realtime`, `pipeline`, or both (pipeline = fallback)" in lines(
        spec_run
    )


def test_instructions_and_instructions_file_together_is_an_error(spec_run: FolderRun) -> None:
    assert "agents/both.yaml:1:1: give `instructions` or `instructions_file`, not both" in lines(spec_run)


def test_missing_instructions_file_is_reported_at_its_value_with_the_resolved_path(spec_run: FolderRun) -> None:
    target = (spec_run.folder / "agents/prompts/nope.md").resolve()
    assert f"agents/nofile.yaml:2:20: instructions_file: {target}: file not found" in lines(spec_run)


def test_voice_pipeline_without_stt_or_tts_is_reported_at_the_pipeline_key(spec_run: FolderRun) -> None:
    assert "agents/nostt.yaml:3:1: pipeline: a voice pipeline needs `stt` (or set text_only: true)" in lines(spec_run)
    assert (
        "agents/notts.yaml:3:1: pipeline: a voice pipeline needs `stt` and `tts` (or set text_only: true)"
        in lines(spec_run)
    )


def test_text_only_pipeline_needs_no_stt_or_tts(spec_run: FolderRun) -> None:
    assert not [line for line in lines(spec_run) if "textonly.yaml" in line]


def test_http_mcp_server_with_ftp_url_is_rejected_at_the_url(spec_run: FolderRun) -> None:
    assert "agents/ftp.yaml:6:10: mcp_servers.files.url: must be an http:// or https:// URL with a host" in lines(
        spec_run
    )


def test_mcp_server_with_neither_command_nor_url_is_reported_at_its_name(spec_run: FolderRun) -> None:
    assert (
        "agents/neither.yaml:5:3: mcp_servers.files: an MCP server needs either `command` (stdio) or `url` (HTTP)"
        in lines(spec_run)
    )


def test_duplicate_agent_name_is_reported_in_both_files_naming_the_other(spec_run: FolderRun) -> None:
    assert "agents/dupa.yaml:2:1: name: agent name 'same' is also used by agents/dupb.yaml" in lines(spec_run)
    assert "agents/dupb.yaml:3:1: name: agent name 'same' is also used by agents/dupa.yaml" in lines(spec_run)


def test_every_bad_file_is_reported_in_one_pass_with_a_summary(spec_run: FolderRun) -> None:
    out = lines(spec_run)
    bad_files = {f"agents/{name}" for name in SPECS if name != "textonly.yaml"}
    reported = {m.group("file") for m in map(ERROR_LINE.match, out[:-1]) if m}
    assert reported == bad_files
    errors = len(out) - 1
    assert out[-1] == f"found {errors} errors in {len(bad_files)} files"


def test_json_format_has_the_same_errors_as_dicts(spec_run: FolderRun) -> None:
    data = spec_run.json
    assert data["ok"] is False
    assert data["agents"] == []
    assert data["errors"]
    for err in data["errors"]:
        assert set(err) == {"file", "line", "col", "key_path", "message"}
        assert isinstance(err["line"], int) and isinstance(err["col"], int)
    as_text = [
        f"{e['file']}:{e['line']}:{e['col']}: {e['key_path'] + ': ' if e['key_path'] else ''}{e['message']}"
        for e in data["errors"]
    ]
    assert as_text == lines(spec_run)[:-1]


def test_two_bad_files_are_both_reported_and_counted(tmp_path: Path) -> None:
    write(tmp_path / "agents/one.yaml", HEAD + "instructions: hi\nrealtime: {provider: openai, modle: x}\n")
    write(tmp_path / "agents/two.yaml", HEAD + "instructions: hi\nrealtime: {provider: openai}\ngreting: hi\n")
    result = run_cli("check", "agents", cwd=tmp_path)
    assert_clean_failure(result)
    assert result.stdout.splitlines() == [
        "agents/one.yaml:3:30: realtime.modle: unknown key 'modle'; did you mean 'model'?",
        "agents/two.yaml:4:1: greting: unknown key 'greting'; did you mean 'greeting'?",
        "found 2 errors in 2 files",
    ]


# -- variables ----------------------------------------------------------------------


def test_default_and_dollar_escape_make_a_valid_spec(tmp_path: Path) -> None:
    write(
        tmp_path / "agents/vars.yaml",
        HEAD
        + 'instructions: "${VR_TEST_UNSET:-Be brief.}"\n'
        + 'greeting: "That costs $$5"\n'
        + "realtime: {provider: openai}\n"
        + "mcp_servers:\n"
        + '  search: {url: "${VR_TEST_URL:-ftp://not-used}"}\n',
    )
    ok = run_cli("check", "agents", cwd=tmp_path, env={"VR_TEST_UNSET": None, "VR_TEST_URL": "http://127.0.0.1:9/mcp"})
    assert ok.rc == 0, ok.output
    # the same default is used when the variable is unset: the ftp:// default is then rejected
    bad = run_cli("check", "agents", cwd=tmp_path, env={"VR_TEST_UNSET": None, "VR_TEST_URL": None})
    assert_clean_failure(bad)
    assert "agents/vars.yaml:6:17: mcp_servers.search.url: must be an http:// or https:// URL with a host" in (
        bad.stdout.splitlines()
    )


def test_default_and_dollar_escape_give_the_expected_values(tmp_path: Path) -> None:
    from voice_runtime.plugins.manager import make_plugin_manager
    from voice_runtime.spec.loader import load_folder

    write(
        tmp_path / "agents/vars.yaml",
        HEAD
        + 'instructions: "${VR_A:-fallback} / ${VR_B:-unused} / ${VR_EMPTY:-empty default}"\n'
        + 'greeting: "That costs $$5, not ${VR_B}"\n'
        + "realtime: {provider: openai}\n",
    )
    result = load_folder(
        tmp_path / "agents", make_plugin_manager(None, entry_points=False), env={"VR_B": "set", "VR_EMPTY": ""}
    )
    assert result.ok, [str(e) for e in result.errors]
    [loaded] = result.specs
    assert loaded.instructions == "fallback / set / empty default"
    assert loaded.spec.greeting == "That costs $5, not set"


# -- secrets ------------------------------------------------------------------------

CANARY = "sk-canary-123"


def test_api_key_from_env_never_appears_in_text_or_json_output(tmp_path: Path) -> None:
    write(
        tmp_path / "agents/leaky.yaml",
        HEAD
        + "instructions: hi\n"
        + "pipeline:\n"
        + "  text_only: true\n"
        + '  llm: {provider: openai, api_key: "${CANARY}", temprature: 0.2}\n',
    )
    for fmt in ("text", "json"):
        result = run_cli("check", "agents", "--format", fmt, cwd=tmp_path, env={"CANARY": CANARY})
        assert_clean_failure(result)
        assert "temprature" in result.stdout  # the other error was reported
        assert CANARY not in result.output


ECHOING = {
    "unknown-provider": "instructions: hi\npipeline:\n  text_only: true\n  llm: {provider: \"${CANARY}\"}\n",
    "unknown-tool": "instructions: hi\nrealtime: {provider: openai}\ntools: [\"${CANARY}\"]\n",
    "missing-instructions-file": "instructions_file: \"prompts/${CANARY}.md\"\nrealtime: {provider: openai}\n",
}


@pytest.mark.parametrize("body", ECHOING.values(), ids=ECHOING.keys())
def test_a_value_from_a_variable_is_never_echoed_in_an_error(tmp_path: Path, body: str) -> None:
    """README: values that came from a variable are never printed. An error that quotes
    the bad value must quote the ${VAR} text instead."""
    write(tmp_path / "agents/leaky.yaml", HEAD + body)
    for fmt in ("text", "json"):
        result = run_cli("check", "agents", "--format", fmt, cwd=tmp_path, env={"CANARY": CANARY})
        assert_clean_failure(result)
        assert "agents/leaky.yaml" in result.stdout
        assert CANARY not in result.output, result.output


@pytest.mark.parametrize("command", [
    ["check"], ["check", "--offline"], ["chat", "--agent", "x"], ["console", "--agent", "x"],
    ["tools", "--agent", "x"], ["call", "--agent", "x", "some_tool"], ["serve", "--unregistered"],
])
def test_a_specs_folder_that_does_not_exist_is_a_usage_error_exit_2(tmp_path: Path, command: list[str]) -> None:
    # the README: exit 2 is a usage error, the same for every command
    result = run_cli(command[0], "missing", *command[1:], cwd=tmp_path)
    assert_clean_failure(result, rc=2)
    assert result.stderr.strip() == "error: missing: no such directory"
    file = write(tmp_path / "a-file.yaml", "x: 1\n")
    result = run_cli(command[0], file.name, *command[1:], cwd=tmp_path)
    assert_clean_failure(result, rc=2)
    assert result.stderr.strip() == "error: a-file.yaml: not a directory (give the folder that holds the *.yaml specs)"


def test_yaml_syntax_errors_are_said_in_plain_words_at_the_quote_or_bracket_that_is_never_closed(
    tmp_path: Path,
) -> None:
    """ruamel gives up at the end of the file when a quote or bracket is never closed;
    the user fixes the line where it opens (ruamel's context mark), and reads why there."""
    agents = tmp_path / "agents"
    body = "pipeline:\n  text_only: true\n  llm: {provider: openai}\n"
    write(agents / "quote.yaml", f'{HEAD}instructions: "You are the desk.\ngreeting: hello\n{body}')
    write(agents / "single.yaml", f"{HEAD}greeting: hi\ninstructions: 'You are the desk.\n{body}")
    write(agents / "list.yaml", f"{HEAD}instructions: hi\ntools: [a, b\n{body}")
    write(agents / "open.yaml", f"{HEAD}instructions: hi\n{body}mcp_servers: {{crm: {{url: http://x/mcp}}\n")
    write(agents / "key.yaml", f"{HEAD}instructions: hi\ntext only\n{body}")
    result = run_cli("check", "--offline", agents)
    assert_clean_failure(result)
    assert result.stdout.splitlines() == [
        f"{agents}/key.yaml:3:1: invalid YAML: this line is not 'key: value' nor a list item ('- ...'): put ': ' "
        "after the key, or quote the text",
        f"{agents}/list.yaml:3:8: invalid YAML: the list opened here with '[' is not closed: at line 4 col 9 there is "
        "':' where ',' or ']' was expected",
        f"{agents}/open.yaml:6:14: invalid YAML: the mapping opened here with '{{' is never closed: no '}}' before the "
        "end of the file",
        f"{agents}/quote.yaml:2:15: invalid YAML: the string opened here with \" is never closed: no closing \" before "
        "the end of the file",
        f"{agents}/single.yaml:3:15: invalid YAML: the string opened here with ' is never closed: no closing ' before "
        "the end of the file",
        "found 5 errors in 5 files",
    ]


# -- files that are not regular files, and agent names -----------------------------

TEXT_PIPELINE = "pipeline:\n  text_only: true\n  llm: {provider: openai}\n"


def test_check_refuses_fifos_devices_and_directories_at_their_key_without_hanging(tmp_path: Path) -> None:
    """A FIFO used to block `check` until someone wrote to it. Every non-regular file,
    as a spec or an instructions file, is an error at file:line:col; none is opened
    for reading."""
    agents = tmp_path / "agents"
    (agents / "prompts").mkdir(parents=True)
    os.mkfifo(agents / "prompts" / "fifo.md")
    (agents / "prompts" / "zero.md").symlink_to("/dev/zero")
    (agents / "prompts" / "dir.md").mkdir()
    for name, target in (("fifo", "fifo.md"), ("zero", "zero.md"), ("dir", "dir.md")):
        write(agents / f"{name}.yaml", f"{HEAD}instructions_file: prompts/{target}\n{TEXT_PIPELINE}")
    os.mkfifo(agents / "pipe.yaml")
    write(agents / "ok.yaml", f"{HEAD}instructions: hi\n{TEXT_PIPELINE}")
    result = run_cli("check", "--offline", agents, timeout=20)
    assert_clean_failure(result)
    prompts = (agents / "prompts").resolve()
    assert result.stdout.splitlines() == [
        f"{agents}/dir.yaml:2:20: instructions_file: {prompts}/dir.md: is a directory, not a regular file",
        f"{agents}/fifo.yaml:2:20: instructions_file: {prompts}/fifo.md: is a FIFO (named pipe), not a regular file",
        f"{agents}/pipe.yaml:1:1: is a FIFO (named pipe), not a regular file",
        f"{agents}/zero.yaml:2:20: instructions_file: /dev/zero: is a character device, not a regular file",
        "found 4 errors in 4 files",
    ]


BAD_NAMES = ["evil\n", "tab\there", "a b", "x" * 64, "-lead", "é", "cr\r"]


def test_one_rule_for_agent_names_from_a_file_stem_or_a_name_key(tmp_path: Path) -> None:
    """A file called `evil\\n.yaml` used to become agent 'evil\\n' though `name: "evil\\n"`
    was refused. The same names are refused from either source, each error on one
    line naming its file; the same valid name is accepted from either source."""
    agents = tmp_path / "agents"
    body = f"instructions: hi\n{TEXT_PIPELINE}"
    for i, name in enumerate(BAD_NAMES):
        write(agents / f"{name}.yaml", HEAD + body)
        write(agents / f"key{i}.yaml", f"{HEAD}name: {json.dumps(name)}\n{body}")
    result = run_cli("check", "--offline", agents)
    assert_clean_failure(result)
    lines = result.stdout.splitlines()
    assert lines[-1] == f"found {2 * len(BAD_NAMES)} errors in {2 * len(BAD_NAMES)} files"
    rule = "(1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit)"
    for i, name in enumerate(BAD_NAMES):
        shown = repr(name)
        escaped_file = f"{agents}/{name}.yaml".replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\x09")  # printable() escapes a tab in a path
        assert f"{escaped_file}:1:1: file name {shown} is not a valid agent name {rule}; rename the file or set `name:`" in lines
        assert f"{agents}/key{i}.yaml:2:7: name: {shown} is not a valid agent name {rule}" in lines
    good = tmp_path / "good"
    write(good / "ok-name_1.x.yaml", HEAD + body)
    write(good / "other.yaml", f"{HEAD}name: ok-name_2.x\n{body}")
    ok = run_cli("check", "--offline", "--format", "json", good)
    assert ok.rc == 0, ok.output
    assert sorted(a["name"] for a in json.loads(ok.stdout)["agents"]) == ["ok-name_1.x", "ok-name_2.x"]


def test_chat_with_an_unknown_agent_names_the_folders_errors_then_that_no_valid_agent_has_that_name(
    tmp_path: Path,
) -> None:
    """Every spec invalid and `--agent` a name none of them has: the user used to see the
    errors only, and wonder whether the agent was among them."""
    agents = tmp_path / "agents"
    write(agents / "front.yaml", f"{HEAD}{TEXT_PIPELINE}")  # no instructions
    write(agents / "billing.yaml", f"{HEAD}instructions: hi\n{TEXT_PIPELINE}temprature: 1\n")
    result = run_cli("chat", agents, "--agent", "concierge")
    assert_clean_failure(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{agents}/billing.yaml:6:1: temprature: unknown key") and \
        lines[1].startswith(f"{agents}/front.yaml:"), lines
    assert lines[2] == (f"error: no agent named 'concierge' in {agents}; "
                        "available: none: every spec has errors (above)")
    # one valid agent beside them: the errors, then the name that can be used
    write(agents / "desk.yaml", f"{HEAD}instructions: hi\n{TEXT_PIPELINE}")
    result = run_cli("chat", agents, "--agent", "concierge")
    assert_clean_failure(result)
    assert result.stderr.splitlines()[2:] == [f"error: no agent named 'concierge' in {agents}; available: desk"]


def test_filler_and_timeout_say_mistakes_are_reported_at_their_keys(tmp_path: Path) -> None:
    write(tmp_path / "desk.yaml", HEAD + (
        "instructions: x\n"
        "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n"
        "mcp_servers:\n"
        "  crm:\n"
        "    url: http://127.0.0.1:1/mcp\n"
        "    filler: {after_ms: -5, say: []}\n"
        "    timeout_say: ''\n"
        "    tools:\n"
        "      lookup: {filler: {say: [x], every_ms: 10, on_result: shout}}\n"
        "  other:\n"
        "    url: http://127.0.0.1:1/mcp\n"
        "    allowed_tools: [search]\n"
        "    tools: {lookup: {timeout_say: sorry}}\n"
    ))
    result = run_cli("check", tmp_path, "--offline")

    assert_clean_failure(result)
    lines = [line.replace(str(tmp_path / "desk.yaml"), "desk.yaml") for line in result.stdout.splitlines()]
    assert lines == [
        "desk.yaml:7:24: mcp_servers.crm.filler.after_ms: input should be greater than or equal to 0",
        "desk.yaml:7:28: mcp_servers.crm.filler.say: list should have at least 1 item after validation, not 0",
        "desk.yaml:8:18: mcp_servers.crm.timeout_say: string should have at least 1 character",
        "desk.yaml:10:45: mcp_servers.crm.tools.lookup.filler.every_ms: input should be greater than or equal to 500",
        "desk.yaml:10:60: mcp_servers.crm.tools.lookup.filler.on_result: input should be 'wait' or 'interrupt'",
        "desk.yaml:11:3: mcp_servers.other: `tools:` names lookup, which allowed_tools does not list "
        "(its settings would never apply); allowed: search",
        "found 6 errors in 1 file",
    ], result.stdout


def test_call_context_uses_are_checked_at_their_location(spec_run: FolderRun) -> None:
    out = lines(spec_run)
    assert ("agents/callref.yaml:2:15: instructions: ${call.caler} names no declared context value "
            "(context: caller)") in out
    assert ("agents/callref.yaml:8:10: mcp_servers.crm.url: ${call.*} may be used in a URL's query only, "
            "not its scheme, host or path") in out
    assert any(line.startswith("agents/callref.yaml:10:14: mcp_servers.local.command: ${call.caller} is not "
                               "substituted here") for line in out)


def test_call_context_declarations_are_checked(spec_run: FolderRun) -> None:
    text = spec_run.text.result.stdout
    assert ("agents/calldecl.yaml:4:18: context.caller.from: `from` must be dispatch:KEY (dispatch metadata), "
            "room:KEY (room metadata) or participant:ATTR (a participant attribute, e.g. "
            "participant:sip.phoneNumber)") in text
    assert "agents/calldecl.yaml:5:3: context.pin: a value with a `default` is never missing: drop `required`" in text
    assert "agents/calldecl.yaml:6:3: context.bad-name" in text
    assert ("mcp_servers.crm: this server uses ${call.*} in its url or headers, so each call connects with "
            "its own values: it cannot be `shared: true` (drop the key)") in text


def test_elicitation_mistakes_are_reported_at_their_keys(tmp_path: Path) -> None:
    write(tmp_path / "desk.yaml", HEAD + (
        "instructions: x\n"
        "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n"
        "mcp_servers:\n"
        "  crm:\n"
        "    url: http://127.0.0.1:1/mcp\n"
        "    elicitation: yes\n"
        "    elicitation_timeout: 0\n"
    ))
    result = run_cli("check", tmp_path, "--offline")

    assert_clean_failure(result)
    lines = [line.replace(str(tmp_path / "desk.yaml"), "desk.yaml") for line in result.stdout.splitlines()]
    assert lines[:2] == [
        "desk.yaml:7:18: mcp_servers.crm.elicitation: input should be 'allow' or 'deny'",
        "desk.yaml:8:26: mcp_servers.crm.elicitation_timeout: input should be greater than 0",
    ], result.stdout


def test_a_root_that_is_not_a_file_uri_and_unknown_sampling_keys_are_reported_at_their_keys(tmp_path: Path) -> None:
    write(tmp_path / "desk.yaml", HEAD + (
        "instructions: x\n"
        "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n"
        "mcp_servers:\n"
        "  crm:\n"
        "    url: http://127.0.0.1:1/mcp\n"
        "    roots: [https://example.com/data]\n"
        "    sampling: {allow: true, max_request: 3}\n"
    ))
    result = run_cli("check", tmp_path, "--offline")

    assert_clean_failure(result)
    out = result.stdout.replace(str(tmp_path / "desk.yaml"), "desk.yaml")
    assert "desk.yaml:7:5: mcp_servers.crm.roots: 'https://example.com/data' is not a file:// URI" in out, out
    assert "desk.yaml:8:29: mcp_servers.crm.sampling.max_request: unknown key 'max_request'; did you mean 'max_requests'?" in out, out


def test_an_analysis_schema_is_checked_at_its_location(tmp_path: Path) -> None:
    """Post-call analysis (`analysis.schema`): a JSON Schema the model's answer is
    validated against, bounded when the spec is read."""
    base = HEAD + "instructions: x\npipeline: {llm: {provider: openai, api_key: k}, text_only: true}\nanalysis:\n"
    deep: dict = {"type": "object"}
    for _ in range(13):
        deep = {"type": "object", "properties": {"x": deep}}
    schemas = {
        "badtype": {"type": "object", "properties": {"resolved": {"type": "bool"}}},
        "notobject": {"type": "array"},
        "deep": deep,
        "huge": {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 40}
                                                  for i in range(400)}},
    }
    for name, schema in schemas.items():
        write(tmp_path / f"{name}.yaml", base + f"  schema: {json.dumps(schema)}\n")
    result = run_cli("check", tmp_path, "--offline")

    assert_clean_failure(result)
    out = result.stdout.replace(str(tmp_path) + "/", "")
    assert ("badtype.yaml:5:3: analysis.schema: is not a valid JSON Schema at properties/resolved/type: 'bool' is "
            "not valid under any of the given schemas") in out
    assert ("notobject.yaml:5:3: analysis.schema: must describe an object (`type: object` at its top level): the "
            "model answers with one JSON object") in out
    assert "deep.yaml:5:3: analysis.schema: is nested more than 12 levels deep" in out
    assert "huge.yaml:5:3: analysis.schema: is 34724 characters of JSON; at most 16384" in out


def test_an_analysis_schema_with_remote_dangling_or_recursive_refs_or_a_bad_pattern_is_refused_where_written(
    tmp_path: Path
) -> None:
    """Refs resolve inside the schema only (never fetched, never looping) and patterns
    are bounded as claims patterns are: refused by `check`, not a failure after each call."""
    base = HEAD + "instructions: x\npipeline: {llm: {provider: openai, api_key: k}, text_only: true}\nanalysis:\n"
    schemas = {
        "remote": {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/evil.json"}}},
        "fileref": {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}},
        "dangling": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}},
        "recursive": {"type": "object", "$defs": {"x": {"$ref": "#/$defs/x"}}, "properties": {"a": {"$ref": "#/$defs/x"}}},
        "dynamic": {"type": "object", "$dynamicRef": "#meta"},
        "draft4": {"type": "object", "$schema": "http://json-schema.org/draft-04/schema#"},
        "slowpattern": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a{100}){1000}"}}},
        "patternprops": {"type": "object", "patternProperties": {"^(a|a)+$": {"type": "string"}}},
        "fine": {"type": "object", "$defs": {"name": {"type": "string", "pattern": "^[A-Z]"}},
                 "properties": {"a": {"$ref": "#/$defs/name"}, "b": {"type": "array", "items": {"$ref": "#/$defs/name"}}}},
    }
    for name, schema in schemas.items():
        write(tmp_path / f"{name}.yaml", base + f"  schema: {json.dumps(schema)}\n")
    result = run_cli("check", tmp_path, "--offline")

    assert_clean_failure(result)
    out = result.stdout.replace(str(tmp_path) + "/", "")
    local = "does not resolve inside the schema: only local refs are supported"
    assert f"remote.yaml:5:59: analysis.schema.properties.a.$ref: 'http://127.0.0.1:9/evil.json' {local}" in out
    assert f"fileref.yaml:5:59: analysis.schema.properties.a.$ref: 'file:///etc/passwd' {local}" in out
    assert f"dangling.yaml:5:59: analysis.schema.properties.a.$ref: '#/nope' {local}" in out
    assert ("recursive.yaml:5:54: analysis.schema.$defs.x.$ref: a recursive $ref (it leads back to itself): "
            "not supported in an analysis schema") in out
    assert "dynamic.yaml:5:45: analysis.schema.$dynamicRef: `$dynamicRef` refers by dynamic scope" in out
    assert "draft4.yaml:5:41: analysis.schema.$schema: only draft 2020-12 is supported" in out
    assert ("slowpattern.yaml:5:80: analysis.schema.properties.a.pattern: counted repetitions ({n}, nested ones "
            "multiplied, all added up) reach 100000; at most 10000") in out
    assert "patternprops.yaml:5:30: analysis.schema.patternProperties: `patternProperties` matches property names" in out
    assert "fine.yaml" not in out
