"""Plugins: discovery, failures, disabling, duplicates, and every hook that runs
without a livekit session. Plugin files are real files in a temporary folder, loaded
by the real plugin manager (in-process) or the real CLI (subprocess)."""

from __future__ import annotations

import inspect
import json
import re
import time
from pathlib import Path

from helpers import REPO, run_cli, write

import voice_runtime
from voice_runtime.plugins import hookspecs
from voice_runtime.plugins.manager import BUILTINS, DISABLE_ENV, TIMEOUT_ENV, make_plugin_manager
from voice_runtime.spec.loader import load_folder

TEST_DIR = Path(__file__).resolve().parents[1]  # the whole suite, every layer
NO_DISABLE = {DISABLE_ENV: None}
BUILTIN_REGISTRATIONS = {
    "openai": ["llm:openai", "realtime:openai", "stt:openai", "tts:openai"],
    "deepgram": ["stt:deepgram"],
    "cartesia": ["tts:cartesia"],
    "silero": ["vad:silero"],
}

TEXT_AGENT = """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  text_only: true
  llm: {provider: openai}
"""


def project(tmp_path: Path, plugins: dict[str, str], agents: dict[str, str] | None = None) -> Path:
    """tmp_path/plugins/<name> and tmp_path/agents/<name>; returns tmp_path."""
    for name, text in plugins.items():
        write(tmp_path / "plugins" / name, text)
    (tmp_path / "plugins").mkdir(exist_ok=True)
    for name, text in (agents or {"ok.yaml": TEXT_AGENT}).items():
        write(tmp_path / "agents" / name, text)
    return tmp_path


def plugin_rows(result) -> list[list[str]]:
    lines = [line for line in result.stdout.splitlines() if not line.startswith(("disabled:", "error:"))]
    assert lines[0].split() == ["PLUGIN", "FROM", "REGISTERED", "SOURCE"], result.output
    return [re.split(r"\s{2,}", line) for line in lines[1:]]


def clean(result, rc: int) -> None:
    assert result.rc == rc, result.output
    assert "Traceback" not in result.output, result.output


# -- listing and discovery ----------------------------------------------------------


def test_plugins_command_lists_the_builtins_and_the_clock_file_plugin_with_what_they_registered() -> None:
    result = run_cli("plugins", "--plugins", "plugins", cwd=REPO, env=NO_DISABLE)
    clean(result, 0)
    assert plugin_rows(result) == [
        *[[name, "built-in", ", ".join(regs), f"voice_runtime.plugins.builtin.{name}"] for name, regs in BUILTIN_REGISTRATIONS.items()],
        ["clock", "file", "tool:clock.now, tool:clock.days_until", "plugins/clock.py"],
    ]


def test_plugins_command_json_has_origin_source_and_registrations() -> None:
    result = run_cli("plugins", "--plugins", "plugins", "--format", "json", cwd=REPO, env=NO_DISABLE)
    clean(result, 0)
    data = json.loads(result.stdout)
    assert data["errors"] == [] and data["disabled"] == []
    clock = data["plugins"][-1]
    assert clock == {
        "name": "clock",
        "origin": "file",
        "source": "plugins/clock.py",
        "registered": ["tool:clock.now", "tool:clock.days_until"],
    }


def test_discovery_order_is_builtins_then_files_sorted_skipping_underscore_files(tmp_path: Path) -> None:
    hello = "import voice_runtime\n"
    project(tmp_path, {"c_third.py": hello, "a_first.py": hello, "_private.py": "raise SystemExit('never run')\n", "b_second.py": hello})
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    assert plugins.errors == []
    assert [(p.name, p.origin) for p in plugins.loaded] == [
        *[(name, "built-in") for name in BUILTINS],
        ("a_first", "file"),
        ("b_second", "file"),
        ("c_third", "file"),
    ]
    assert list(BUILTINS) == ["openai", "deepgram", "cartesia", "silero"]


ENTRY_POINT_MODULE = """\
import voice_runtime

@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("ep.hello", lambda: None, description="from an installed package")
"""


def installed_package(site: Path, entry_points: str) -> None:
    """A real (minimal) installed distribution on a sys.path folder, with entry points."""
    write(site / "acmeplug.py", ENTRY_POINT_MODULE)
    write(site / "acmeplug-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: acmeplug\nVersion: 0.1\n")
    write(site / "acmeplug-0.1.dist-info/entry_points.txt", f"[voice_runtime]\n{entry_points}")


def test_entry_point_plugins_load_between_builtins_and_files(tmp_path: Path) -> None:
    project(tmp_path, {"zz_file.py": "import voice_runtime\n"})
    installed_package(tmp_path / "site", "acme = acmeplug\n")
    result = run_cli("plugins", "--format", "json", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), **NO_DISABLE})
    clean(result, 0)
    rows = json.loads(result.stdout)["plugins"]
    assert [(r["name"], r["origin"]) for r in rows] == [
        *[(name, "built-in") for name in BUILTINS],
        ("acme", "entry point"),
        ("zz_file", "file"),
    ]
    assert rows[len(BUILTINS)]["source"] == "acmeplug:acmeplug"
    assert rows[len(BUILTINS)]["registered"] == ["tool:ep.hello"]


def test_entry_point_that_fails_to_load_is_reported_and_others_still_load(tmp_path: Path) -> None:
    project(tmp_path, {"good.py": "import voice_runtime\n"})
    installed_package(tmp_path / "site", "broken = acmeplug_missing_module\n")
    result = run_cli("plugins", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), **NO_DISABLE})
    clean(result, 1)
    assert (
        "error: acmeplug:acmeplug_missing_module:1:1: entry point 'broken' failed to load: "
        "ModuleNotFoundError: No module named 'acmeplug_missing_module'" in result.stdout.splitlines()
    )
    assert [row[0] for row in plugin_rows(result)] == [*BUILTINS, "good"]


# -- broken plugin files ------------------------------------------------------------

BROKEN = {
    "broken_syntax.py": "import voice_runtime\n\ndef f(:\n    pass\n",
    "broken_import.py": '"""A plugin with a missing dependency."""\nimport voice_runtime\n\nfrom voice_runtime import no_such_name\n',
    "broken_raise.py": (
        "import voice_runtime\n\n\ndef setup():\n    raise RuntimeError('no config for this plugin')\n\n\nsetup()\n"
    ),
    "good.py": (
        "import voice_runtime\n\n@voice_runtime.hookimpl\ndef voice_runtime_register_tools(register):\n"
        "    register('good.hello', lambda: None)\n"
    ),
}
BROKEN_MESSAGES = {
    "broken_import.py": (4, 1, "plugin failed to import: ImportError: cannot import name 'no_such_name' from 'voice_runtime'"),
    "broken_raise.py": (5, 1, "plugin failed to import: RuntimeError: no config for this plugin"),
    "broken_syntax.py": (3, 7, "plugin has a syntax error: invalid syntax"),
}


def test_broken_plugin_files_are_reported_at_their_line_and_the_others_still_load(tmp_path: Path) -> None:
    project(tmp_path, BROKEN)
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    got = {Path(e.file).name: (e.line, e.col, e.message) for e in plugins.errors}
    assert set(got) == set(BROKEN_MESSAGES)
    for name, (line, col, message) in BROKEN_MESSAGES.items():
        assert got[name][:2] == (line, col), (name, got[name])
        assert got[name][2].startswith(message), got[name][2]
    assert all(Path(e.file) == tmp_path / "plugins" / Path(e.file).name for e in plugins.errors)
    assert [p.name for p in plugins.loaded] == [*BUILTINS, "good"]
    assert "good.hello" in plugins.registry.tools


def test_plugins_command_reports_broken_files_with_path_and_line(tmp_path: Path) -> None:
    """`voice-runtime plugins` from the project folder (default: the relative `plugins/`)."""
    project(tmp_path, BROKEN)
    result = run_cli("plugins", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    for name, (line, col, message) in BROKEN_MESSAGES.items():
        prefix = f"error: plugins/{name}:{line}:{col}: {message}"
        assert any(e.startswith(prefix) for e in errors), f"{prefix!r} not in {errors}"
    assert [row[0] for row in plugin_rows(result)] == [*BUILTINS, "good"]


def test_check_fails_naming_a_broken_plugin_file_and_still_checks_the_specs(tmp_path: Path) -> None:
    project(tmp_path, BROKEN, {"uses_good.yaml": TEXT_AGENT + "tools: [good.hello]\n", "typo.yaml": TEXT_AGENT + "greting: hi\n"})
    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    out = result.stdout.splitlines()
    plugins_dir = (tmp_path / "plugins").resolve()
    for name, (line, col, message) in BROKEN_MESSAGES.items():
        assert any(o.startswith(f"{plugins_dir / name}:{line}:{col}: {message}") for o in out), out
    assert "agents/typo.yaml:6:1: greting: unknown key 'greting'; did you mean 'greeting'?" in out
    assert not any("uses_good.yaml" in o for o in out)  # the good plugin's tool is there
    assert out[-1] == "found 4 errors in 4 files"


HOSTILE = {
    # file -> (source, line, message): what each does at import, and what check says
    "exits.py": ("import os\n\nos._exit(0)\n", 3, "plugin called exit with code 0 while importing"),
    "hangs.py": ("import time\n\nwhile True:\n    time.sleep(0.05)\n", 4, "plugin did not finish importing within 1 s"),
    "interrupts.py": ("import voice_runtime\nraise KeyboardInterrupt\n", 2, "plugin failed to import: KeyboardInterrupt"),
    "kills.py": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", 1,
                 "plugin killed the process importing it (SIGKILL)"),
    "quits.py": ("import sys\n\n\nsys.exit(3)\n", 4, "plugin failed to import: SystemExit: 3"),
}


def test_check_fails_naming_each_plugin_that_hangs_exits_or_interrupts_at_import(tmp_path: Path) -> None:
    """An os._exit(0) plugin used to end `check` with exit code 0 and no output while
    a spec was invalid; a hanging one hung it. Each is now an error at its file and
    line, the good plugin still loads, and the specs are still checked."""
    project(tmp_path, {**{name: source for name, (source, _, _) in HOSTILE.items()}, "good.py": GOOD},
            {"uses_good.yaml": TEXT_AGENT + "tools: [good.hello]\n", "typo.yaml": TEXT_AGENT + "greting: hi\n"})
    started = time.monotonic()
    result = run_cli("check", "--offline", "agents", cwd=tmp_path, env={**NO_DISABLE, TIMEOUT_ENV: "1"}, timeout=60)
    elapsed = time.monotonic() - started
    clean(result, 1)
    plugins_dir = (tmp_path / "plugins").resolve()
    expected = sorted(f"{plugins_dir / name}:{line}:1: {message}" for name, (_, line, message) in HOSTILE.items())
    out = result.stdout.splitlines()
    assert sorted(o for o in out if str(plugins_dir) in o) == expected
    assert "agents/typo.yaml:6:1: greting: unknown key 'greting'; did you mean 'greeting'?" in out
    assert out[-1] == f"found {len(HOSTILE) + 1} errors in {len(HOSTILE) + 1} files"
    assert elapsed < 15, f"the hanging plugin is given 1 s, check took {elapsed:.1f} s"


# -- disabling ----------------------------------------------------------------------


def test_disable_env_blocks_the_clock_plugin_and_its_tools_become_unknown() -> None:
    env = {DISABLE_ENV: "clock"}
    listed = run_cli("plugins", "--plugins", "plugins", cwd=REPO, env=env)
    clean(listed, 0)
    assert "clock" not in [row[0] for row in plugin_rows(listed)]
    assert "disabled: clock" in listed.stdout.splitlines()

    checked = run_cli("check", "agents.d", cwd=REPO, env=env)
    clean(checked, 1)
    support = (REPO / "agents.d/support.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(support, 1) if text.startswith("tools:"))
    col = support[line - 1].index("clock.now") + 1
    assert (
        f"agents.d/support.yaml:{line}:{col}: tools[0]: unknown tool 'clock.now'; available: none registered"
        in checked.stdout.splitlines()
    )


def test_disable_env_takes_a_comma_separated_list_including_builtins(tmp_path: Path, monkeypatch) -> None:
    project(tmp_path, {"clock.py": (REPO / "plugins/clock.py").read_text()})
    monkeypatch.setenv(DISABLE_ENV, " deepgram , clock ")
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    assert sorted(plugins.disabled) == ["clock", "deepgram"]
    assert [p.name for p in plugins.loaded] == ["openai", "cartesia", "silero"]
    assert "clock.now" not in plugins.registry.tools
    assert [p.name for p in plugins.registry.providers_of("stt")] == ["openai"]


# -- duplicates ---------------------------------------------------------------------

DUP = """\
from pydantic import BaseModel

import voice_runtime


class Options(BaseModel):
    pass


@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("clock.now", lambda: None, description="a second clock.now")


@voice_runtime.hookimpl
def voice_runtime_register_providers(register):
    register("stt", "deepgram", Options, lambda options: None)
"""


def test_duplicate_tool_or_provider_is_an_error_naming_both_plugins(tmp_path: Path) -> None:
    project(tmp_path, {"clock.py": (REPO / "plugins/clock.py").read_text(), "dup.py": DUP})
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    registry = plugins.registry
    assert sorted(str(p) for p in registry.problems) == [
        "plugin dup: stt provider 'deepgram' is already registered by plugin deepgram",
        "plugin dup: tool 'clock.now' is already registered by plugin clock",
    ]
    # the first registration stays in force
    assert registry.tools["clock.now"].plugin == "clock"
    assert registry.provider("stt", "deepgram").plugin == "deepgram"

    listed = run_cli("plugins", cwd=tmp_path, env=NO_DISABLE)
    clean(listed, 1)
    assert "error: plugin dup: tool 'clock.now' is already registered by plugin clock" in listed.stdout.splitlines()
    assert "error: plugin dup: stt provider 'deepgram' is already registered by plugin deepgram" in listed.stdout.splitlines()


def test_check_reports_a_duplicate_registration_at_the_plugin_file(tmp_path: Path) -> None:
    project(tmp_path, {"clock.py": (REPO / "plugins/clock.py").read_text(), "dup.py": DUP})
    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    dup_file = (tmp_path / "plugins/dup.py").resolve()
    out = result.stdout.splitlines()
    for what in ("tool 'clock.now' is already registered by plugin clock", "stt provider 'deepgram' is already registered by plugin deepgram"):
        assert any(o.startswith(f"{dup_file}:1:1: ") and o.endswith(what) for o in out), f"{what!r} at {dup_file}: {out}"
    assert out[-1] == "found 2 errors in 1 file"


# -- hook: voice_runtime_register_providers -----------------------------------------

ACME = """\
\"\"\"A third-party TTS provider with its own options.\"\"\"
from pydantic import BaseModel, ConfigDict, Field

import voice_runtime


class AcmeTTSOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    voice: str = Field("robot", description="Acme voice name.")
    pitch_shift: float = Field(0.0, ge=-12, le=12, description="Semitones up or down.")


def make_tts(options):
    raise RuntimeError("check must never build a provider")


@voice_runtime.hookimpl
def voice_runtime_register_providers(register):
    register("tts", "acme", AcmeTTSOptions, make_tts)
"""
ACME_AGENT = """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  stt: {provider: deepgram}
  llm: {provider: openai}
  tts:
    provider: acme
    voice: zed
    pitch_shift: 2
"""


def test_plugin_provider_validates_in_a_spec_and_is_listed(tmp_path: Path) -> None:
    project(tmp_path, {"acme.py": ACME}, {"acme.yaml": ACME_AGENT})
    checked = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(checked, 0)
    assert "tts acme" in checked.stdout
    listed = run_cli("plugins", cwd=tmp_path, env=NO_DISABLE)
    clean(listed, 0)
    assert ["acme", "file", "tts:acme", "plugins/acme.py"] in plugin_rows(listed)
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    [loaded] = load_folder(tmp_path / "agents", plugins).specs
    tts = loaded.spec.pipeline.tts[0]
    assert (tts.provider, tts.voice, tts.pitch_shift) == ("acme", "zed", 2.0)


def test_plugin_provider_option_typo_is_an_error_with_did_you_mean(tmp_path: Path) -> None:
    project(
        tmp_path,
        {"acme.py": ACME},
        {
            "typo.yaml": ACME_AGENT.replace("pitch_shift: 2", "pitch_shfit: 2"),
            "range.yaml": ACME_AGENT.replace("pitch_shift: 2", "pitch_shift: 99"),
        },
    )
    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    assert result.stdout.splitlines() == [
        "agents/range.yaml:9:18: pipeline.tts.pitch_shift: input should be less than or equal to 12",
        "agents/typo.yaml:9:5: pipeline.tts.pitch_shfit: unknown key 'pitch_shfit'; did you mean 'pitch_shift'?",
        "found 2 errors in 2 files",
    ]


def test_plugin_provider_options_are_part_of_the_schema(tmp_path: Path) -> None:
    project(tmp_path, {"acme.py": ACME}, {"acme.yaml": ACME_AGENT})
    result = run_cli("schema", "--plugins", "plugins", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 0)
    schema = json.loads(result.stdout)
    acme = [d for d in schema["$defs"].values() if d.get("properties", {}).get("provider", {}).get("const") == "acme"]
    assert len(acme) == 1
    props = acme[0]["properties"]
    assert props["pitch_shift"]["description"] == "Semitones up or down."
    assert props["pitch_shift"]["maximum"] == 12
    assert props["voice"]["default"] == "robot"
    assert acme[0]["additionalProperties"] is False
    tts = json.dumps(schema["$defs"]["Pipeline"]["properties"]["tts"])
    assert '"acme"' in tts

    without = run_cli("schema", "--plugins", str(tmp_path / "no-plugins"), cwd=tmp_path, env=NO_DISABLE)
    assert '"acme"' not in without.stdout


def test_provider_registration_with_an_unknown_kind_is_an_error_naming_the_plugin(tmp_path: Path) -> None:
    bad = ACME.replace('register("tts", "acme"', 'register("asr", "acme"')
    project(tmp_path, {"acme.py": bad})
    result = run_cli("plugins", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    assert (
        "error: plugin acme: voice_runtime_register_providers raised ValueError: unknown provider kind 'asr'; "
        "valid kinds: stt, llm, tts, vad, realtime" in result.stdout.splitlines()
    )


# -- hook: voice_runtime_register_tools ---------------------------------------------

TOOLS = """\
import voice_runtime


def make_lookup():
    raise RuntimeError("check must never build a tool")


@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("acme.lookup", make_lookup, description="Look a thing up")
"""


def test_plugin_tool_can_be_listed_in_a_spec_without_being_built(tmp_path: Path) -> None:
    project(tmp_path, {"acmetools.py": TOOLS}, {"a.yaml": TEXT_AGENT + "tools: [acme.lookup]\n"})
    checked = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(checked, 0)
    assert "acme.lookup" in checked.stdout
    listed = run_cli("plugins", cwd=tmp_path, env=NO_DISABLE)
    assert ["acmetools", "file", "tool:acme.lookup", "plugins/acmetools.py"] in plugin_rows(listed)
    registry = make_plugin_manager(tmp_path / "plugins", entry_points=False).registry
    assert registry.tools["acme.lookup"].description == "Look a thing up"
    assert registry.tools["acme.lookup"].plugin == "acmetools"


def test_tool_registration_with_an_invalid_name_is_an_error_and_other_tools_stay(tmp_path: Path) -> None:
    bad = TOOLS.replace('register("acme.lookup"', 'register("acme.ok", make_lookup)\n    register("Acme Lookup"')
    project(tmp_path, {"acmetools.py": bad, "clock.py": (REPO / "plugins/clock.py").read_text()})
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    assert [str(p) for p in plugins.registry.problems] == [
        "plugin acmetools: voice_runtime_register_tools raised ValueError: tool name 'Acme Lookup' must match "
        "^[a-z][a-z0-9_.-]*$"
    ]
    assert {"acme.ok", "clock.now", "clock.days_until"} <= set(plugins.registry.tools)


# -- hook: voice_runtime_adjust_spec_data -------------------------------------------

ADJUST = """\
import voice_runtime

SEEN = []


@voice_runtime.hookimpl
def voice_runtime_adjust_spec_data(data, path):
    SEEN.append((path.name, data.get("instructions")))
    data.setdefault("greeting", "Hello from the organisation default")
    if path.stem == "adds_typo":
        data["greting"] = "added by a plugin"
    if path.stem == "explodes":
        raise RuntimeError("policy service down")
"""


def test_adjust_spec_data_fills_in_a_default_before_validation(tmp_path: Path) -> None:
    project(
        tmp_path,
        {"policy.py": ADJUST},
        {
            "plain.yaml": TEXT_AGENT.replace("instructions: hi", 'instructions: "${VR_TEST_WHO:-nobody}"'),
            "own.yaml": TEXT_AGENT + "greeting: My own greeting\n",
        },
    )
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    result = load_folder(tmp_path / "agents", plugins, env={"VR_TEST_WHO": "alice"})
    assert result.ok, [str(e) for e in result.errors]
    greetings = {s.name: s.spec.greeting for s in result.specs}
    assert greetings == {"plain": "Hello from the organisation default", "own": "My own greeting"}
    # the hook sees the data after ${VAR} expansion
    seen = plugins.pm.get_plugin("policy").SEEN
    assert sorted(seen) == [("own.yaml", "hi"), ("plain.yaml", "alice")]


def test_key_added_by_adjust_spec_data_is_reported_at_the_top_of_the_file(tmp_path: Path) -> None:
    project(tmp_path, {"policy.py": ADJUST}, {"adds_typo.yaml": TEXT_AGENT, "explodes.yaml": TEXT_AGENT})
    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    assert result.stdout.splitlines() == [
        "agents/adds_typo.yaml:1:1: greting: unknown key 'greting'; did you mean 'greeting'?",
        f"agents/explodes.yaml:1:1: plugin 'policy' ({tmp_path / 'plugins' / 'policy.py'}): "
        "voice_runtime_adjust_spec_data raised RuntimeError: policy service down",
        "found 2 errors in 2 files",
    ]


# -- hook: voice_runtime_check_spec -------------------------------------------------

POLICY = """\
import voice_runtime


@voice_runtime.hookimpl
def voice_runtime_check_spec(spec, path):
    problems = []
    if spec.pipeline is not None and spec.pipeline.llm[0].model == "gpt-4o":
        problems.append(("pipeline.llm", "gpt-4o is not approved here"))
    if spec.greeting is None:
        problems.append("every agent must have a greeting")
    if path.stem == "explodes":
        raise KeyError("approvals")
    return problems or None
"""


def test_check_spec_problems_are_reported_at_their_key_or_at_1_1(tmp_path: Path) -> None:
    project(
        tmp_path,
        {"policy.py": POLICY},
        {
            "approved.yaml": TEXT_AGENT + "greeting: hello\n",
            "rejected.yaml": TEXT_AGENT.replace("llm: {provider: openai}", "llm:\n    provider: openai\n    model: gpt-4o"),
            "explodes.yaml": TEXT_AGENT + "greeting: hello\n",
        },
    )
    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    assert result.stdout.splitlines() == [
        f"agents/explodes.yaml:1:1: plugin 'policy' ({tmp_path / 'plugins' / 'policy.py'}): "
        "voice_runtime_check_spec raised KeyError: 'approvals'",
        "agents/rejected.yaml:1:1: every agent must have a greeting",
        "agents/rejected.yaml:5:3: pipeline.llm: gpt-4o is not approved here",
        "found 3 errors in 2 files",
    ]


# -- the hooks themselves -----------------------------------------------------------


def hook_names() -> list[str]:
    names = [name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "voice_runtime_spec")]
    assert len(names) >= 8, names  # the marker attribute is what pluggy sets; guard against finding none
    return sorted(names)


def readme_hook_table() -> dict[str, list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(voice_runtime_\w+)\(([^)]*)\)` \|", readme, re.M)
    return {name: [p.strip() for p in params.split(",") if p.strip()] for name, params in rows}


def test_every_hook_is_named_documented_and_in_the_readme_table() -> None:
    table = readme_hook_table()
    for name in hook_names():
        func = getattr(hookspecs, name)
        assert name.startswith("voice_runtime_"), name
        assert (func.__doc__ or "").strip(), f"{name} has no docstring"
        assert name in table, f"{name} is missing from README.md's hook table"
        assert table[name] == list(inspect.signature(func).parameters), f"README shows {name}({', '.join(table[name])})"
    assert set(table) == set(hook_names()), "README documents a hook that does not exist"
    assert voice_runtime.hookimpl.project_name == "voice_runtime"


def test_every_hook_is_exercised_by_some_test_file() -> None:
    """Hooks are tested by name somewhere under tests/ (this test's own text excluded)."""
    own = inspect.getsource(test_every_hook_is_exercised_by_some_test_file)
    corpus = ""
    for path in sorted(TEST_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        corpus += text.replace(own, "") if path == Path(__file__).resolve() else text
    missing = [name for name in hook_names() if name not in corpus]
    assert not missing, f"hooks with no test naming them: {', '.join(missing)}"


def test_plugin_module_runs_as_a_fresh_module_each_time(tmp_path: Path) -> None:
    project(tmp_path, {"counter.py": "import voice_runtime\nLOADS = [1]\n"})
    first = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    write(tmp_path / "plugins/counter.py", "import voice_runtime\nLOADS = [2]\n")
    second = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    a = first.pm.get_plugin("counter")
    b = second.pm.get_plugin("counter")
    assert (a.LOADS, b.LOADS) == ([1], [2])


def test_hooks_found_by_their_marker_are_the_hooks_pluggy_knows() -> None:
    plugins = make_plugin_manager(None, entry_points=False)
    assert sorted(n for n in dir(plugins.hook) if n.startswith("voice_runtime_")) == hook_names()


# -- plugins that do not match the hooks --------------------------------------------

BAD_ARGS = """\
import voice_runtime


@voice_runtime.hookimpl
def voice_runtime_register_tools(register, extra):
    register("bad.tool", lambda: None)
"""
GOOD = "import voice_runtime\n\n@voice_runtime.hookimpl\ndef voice_runtime_register_tools(register):\n    register('good.hello', lambda: None)\n"


def test_hookimpl_with_an_argument_the_hook_lacks_is_reported_and_others_still_load(tmp_path: Path) -> None:
    project(tmp_path, {"badargs.py": BAD_ARGS, "good.py": GOOD}, {"a.yaml": TEXT_AGENT + "tools: [good.hello]\n"})
    plugins = make_plugin_manager(tmp_path / "plugins", entry_points=False)
    assert [Path(e.file).name for e in plugins.errors] == ["badargs.py"]
    assert "extra" in plugins.errors[0].message
    assert [p.name for p in plugins.loaded] == [*BUILTINS, "good"]
    assert set(plugins.registry.tools) == {"good.hello"}  # nothing half-registered from badargs

    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    out = result.stdout.splitlines()
    assert out[0].startswith(f"{(tmp_path / 'plugins/badargs.py').resolve()}:") and "extra" in out[0], out
    assert out[-1] == "found 1 error in 1 file"


def test_misspelled_hook_name_is_reported_naming_the_hook_and_the_file(tmp_path: Path) -> None:
    typo = GOOD.replace("voice_runtime_register_tools", "voice_runtime_register_tool")
    project(tmp_path, {"typo.py": typo})
    result = run_cli("check", "agents", cwd=tmp_path, env=NO_DISABLE)
    clean(result, 1)
    [error, summary] = result.stdout.splitlines()
    assert "unknown hook 'voice_runtime_register_tool'" in error
    assert "typo.py" in error
    assert summary == "found 1 error in 1 file"
