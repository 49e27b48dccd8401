"""Test files: their format (pydantic, strict like specs) and where they are found.

```yaml
apiVersion: voice-runtime/v1
agent: support
cases:
  - name: tells the time in Paris
    script: [{tool_call: get_current_time, arguments: {timezone: Europe/Paris}}, {say: "..."}]
    mocks: {get_current_time: '{"datetime": "..."}'}
    turns:
      - user: what time is it in Paris?
        expect: [{tool_call: get_current_time, arguments: {timezone: Europe/Paris}}, {reply_contains: Paris}]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ...spec.errors import SpecError
from ...spec.loader import SPEC_SUFFIXES, KeyPath, Loc
from ...spec.models import StrictModel, regex_text

if TYPE_CHECKING:
    from ...plugins.manager import Plugins

TESTS_FOLDER = "tests"  # agents.d/tests/: never read as specs (the catalog lists only *.yaml files of agents.d/)


class ScriptEntry(StrictModel):
    """What the scripted model answers to one LLM request: a tool call or words."""

    tool_call: str | None = Field(None, min_length=1, description="Call this tool...")
    arguments: dict[str, Any] = Field(default_factory=dict, description="...with these arguments.")
    say: str | None = Field(None, description="Answer with these words.")

    @model_validator(mode="after")
    def _one(self) -> ScriptEntry:
        if (self.tool_call is None) == (self.say is None):
            raise PydanticCustomError("script_entry", "a script entry is either `tool_call:` (with `arguments:`) or `say:`")
        if self.say is not None and self.arguments:
            raise PydanticCustomError("script_entry", "`arguments:` go with `tool_call:`, not `say:`")
        return self


EXPECTATIONS = ("tool_call", "no_tool_call", "reply_contains", "reply_matches", "handoff_to", "judge")


class Expectation(StrictModel):
    """One thing the turn must show; exactly one of the keys (``arguments`` goes with ``tool_call``)."""

    tool_call: str | None = Field(None, min_length=1, description="This tool was called in the turn...")
    arguments: dict[str, Any] | None = Field(None, description="...with at least these arguments.")
    no_tool_call: Literal[True] | None = Field(None, description="No tool was called in the turn.")
    reply_contains: str | None = Field(None, min_length=1, description="The reply holds this text (any case).")
    reply_matches: Annotated[str, AfterValidator(regex_text)] | None = Field(
        None, min_length=1, description="The reply matches this regular expression.")
    handoff_to: str | None = Field(None, min_length=1, description="The session was handed to this agent.")
    judge: str | None = Field(None, min_length=1, description="An LLM judge finds the reply fulfils this intent "
                              "(needs the spec's real model and its key).")

    @model_validator(mode="after")
    def _one(self) -> Expectation:
        given = [k for k in EXPECTATIONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError("expectation", "an expectation has exactly one of {keys}; this one has {n}",
                                      {"keys": ", ".join(EXPECTATIONS), "n": ", ".join(given) or "none"})
        if self.arguments is not None and self.tool_call is None:
            raise PydanticCustomError("expectation", "`arguments:` go with `tool_call:`")
        return self

    def describe(self) -> str:
        kind = next(k for k in EXPECTATIONS if getattr(self, k) is not None)
        value = getattr(self, kind)
        text = f"{kind} {value!r}" if kind != "no_tool_call" else "no_tool_call"
        if self.arguments is not None:
            text += f" with arguments {self.arguments}"
        return text


class Turn(StrictModel):
    user: str = Field(min_length=1, description="What the caller says.")
    expect: list[Expectation] = Field(default_factory=list)


class CaseExpect(StrictModel):
    """What the whole call must show once it ended."""

    report: dict[str, Any] = Field(description="A subset of the call's report (as `chat --json` prints it): "
                                   "each key given must be there with a matching value (session/testing/report_match.py).")

    @field_validator("report")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        from ..call_report import REPORT_FIELDS

        unknown = sorted(set(value) - set(REPORT_FIELDS))
        if unknown:
            raise PydanticCustomError("report_key", "a call report has no {keys}; its keys: {valid}",
                                      {"keys": ", ".join(unknown), "valid": ", ".join(REPORT_FIELDS)})
        return value


class Case(StrictModel):
    name: str = Field(min_length=1)
    script: list[ScriptEntry] | None = Field(None, description="A scripted model replaces the LLM: each LLM "
                                             "request takes the next entry.")
    mocks: dict[str, str] = Field(default_factory=dict, description="tool -> result text; a mocked tool never "
                                  "reaches its server.")
    allow_unbacked_claims: bool = Field(False, description="A reply may claim an action no tool backs.")
    context: dict[str, str] = Field(default_factory=dict, description="The call context values (the agent's "
                                    "`context:`) this call carries, by name.")
    turns: list[Turn] = Field(min_length=1)
    expect: CaseExpect | None = Field(None, description="What the call's report must hold once the turns are done.")

    @property
    def checks_analysis(self) -> bool:
        """The case asserts on the post-call analysis, which the spec's real model fills."""
        return self.expect is not None and "analysis" in self.expect.report

    @property
    def offline(self) -> bool:
        """Runs with no network: a scripted model, no judge or analysis asserted on
        (which need a real one), and every tool the script calls mocked (or a
        handoff's transfer tool)."""
        if self.script is None or self.checks_analysis or any(e.judge for t in self.turns for e in t.expect):
            return False
        return all(e.tool_call in self.mocks or e.tool_call.startswith("transfer_to_")
                   for e in self.script if e.tool_call is not None)


class TestFile(StrictModel):
    __test__ = False  # not a pytest class

    apiVersion: Literal["voice-runtime/v1"]
    agent: str = Field(min_length=1, description="The agent (spec name) the cases talk to.")
    cases: list[Case] = Field(min_length=1)

    @field_validator("cases")
    @classmethod
    def _unique(cls, value: list[Case]) -> list[Case]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PydanticCustomError("case_name", "case names must differ: {names}", {"names": ", ".join(twice)})
        return value


@dataclass
class LoadedTests:
    path: Path
    tests: TestFile
    key_locs: dict[KeyPath, Loc] = field(default_factory=dict)

    def where(self, key_path: KeyPath) -> str:
        line, col = self.key_locs.get(key_path, (1, 1))
        return f"{self.path}:{line}:{col}"


def find_test_files(root: Path) -> list[Path] | str:
    """``root`` is a test file or a folder of them; else why not (no line of any file is
    at fault, so no file:line:col)."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        return "no such file or folder" if not root.exists() else "not a regular file or a folder"
    return sorted(p for p in root.iterdir() if p.suffix in SPEC_SUFFIXES and not p.name.startswith("."))


def load_tests(paths: list[Path], plugins: Plugins, agents: set[str]) -> tuple[list[LoadedTests], list[SpecError]]:
    """Every file, every problem in one pass (like ``check``); ``agents``: the names
    of the folder's valid specs, which ``agent:`` must be one of."""
    from ...spec.loader import SpecLoader

    loader = SpecLoader(plugins)
    loaded, errors = [], []
    for path in paths:
        got = loader.validate(path, TestFile, "a test file", "apiVersion: voice-runtime/v1")
        if isinstance(got, list):
            errors.extend(got)
            continue
        tests, walker = got
        if tests.agent not in agents:
            errors.append(walker.error(("agent",), f"no valid agent named {tests.agent!r}; available: "
                                                   f"{', '.join(sorted(agents)) or 'none'}", value=True))
            continue
        loaded.append(LoadedTests(path, tests, walker.key_locs))
    return loaded, sorted(errors)
