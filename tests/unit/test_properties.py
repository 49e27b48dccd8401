"""Property-based tests (hypothesis) of the loader and the catalog.

The loader: whatever a file holds (any YAML document, any text, any bytes), loading it
gives an accepted spec or a non-empty list of compiler-style errors, never an
exception; and its libyaml fast path reads every document exactly like the ruamel
parser it stands in for.

The catalog: random sequences of edits to a small folder (valid specs, new
instructions, invalid edits, deletions, `name:` changes, instructions files appearing
and disappearing) keep "each agent served is the last valid version of its file",
with the documented exceptions modelled explicitly: a name still held by another
file's last good version is refused, and a folder emptied all at once is refused.

Every example runs in a fresh temporary directory. Files are written the way editors
save (a temporary file, then ``os.replace``) unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

import voice_runtime
import voice_runtime.spec.yaml_fast as yaml_fast
import voice_runtime.spec.yaml_tree as yaml_tree
from voice_runtime.serve.catalog import Catalog, ReloadResult, read_published
from voice_runtime.plugins.manager import Plugins, make_plugin_manager
from voice_runtime.spec.errors import SpecError
from voice_runtime.spec.loader import LoadedSpec, SpecLoader

PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)  # no "explain": slow
FUZZ = settings(
    max_examples=200,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
ENV = {"VR_TEST_SET": "set-value", "VR_TEST_EMPTY": ""}
HEAD = "apiVersion: voice-runtime/v1\n"
VALID = HEAD + "instructions: hi\nrealtime: {provider: openai}\n"


@lru_cache(maxsize=1)
def plugins() -> Plugins:
    return make_plugin_manager(None, entry_points=False)


def load_bytes(data: bytes) -> tuple[LoadedSpec | list[SpecError], Path]:
    """Load ``data`` from a file in a fresh directory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_bytes(data)
        return SpecLoader(plugins(), env=ENV).load(path), path


def load_both_ways(data: bytes) -> tuple[LoadedSpec | list[SpecError], LoadedSpec | list[SpecError]]:
    """The same file loaded as usual (fast path when it applies) and through ruamel only."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_bytes(data)
        usual = SpecLoader(plugins(), env=ENV).load(path)
        with ruamel_only():
            return usual, SpecLoader(plugins(), env=ENV).load(path)


@contextmanager
def ruamel_only() -> Iterator[None]:
    """Every document through the reference parser: the state the loader is in when
    PyYAML has no libyaml (``_fast_setup()`` gives False, so ``_fast_compose`` passes)."""
    yaml_fast._fast_setup()
    saved = yaml_fast._fast_parts
    yaml_fast._fast_parts = False
    try:
        yield
    finally:
        yaml_fast._fast_parts = saved


def max_line(data: bytes) -> int:
    """An upper bound of the line numbers in ``data``, whatever a parser counts as a break."""
    text = data.decode("utf-8", errors="replace")
    return 1 + sum(text.count(ch) for ch in "\n\r\x85\u2028\u2029")


def assert_spec_or_errors(result: object, path: Path, data: bytes) -> None:
    if isinstance(result, LoadedSpec):
        assert result.path == path
        return
    assert isinstance(result, list) and result, f"neither a LoadedSpec nor a non-empty error list: {result!r}"
    for error in result:
        assert isinstance(error, SpecError), repr(error)
        text = str(error)
        assert text.startswith(f"{path}:{error.line}:{error.col}: "), text
        assert error.message, text
        assert "\n" not in text and "\r" not in text, f"an error must be one line: {text!r}"
        assert 1 <= error.line <= max_line(data), f"line {error.line} is not in the file: {text!r}"
        assert error.col >= 1, text


# -- strategies: YAML documents -----------------------------------------------------

SPEC_KEYS = (
    "apiVersion", "name", "instructions", "instructions_file", "greeting", "realtime", "pipeline", "mcp_servers",
    "tools", "provider", "model", "voice", "temperature", "stt", "llm", "tts", "vad", "turn_detection", "text_only",
    "command", "args", "env", "url", "transport", "headers", "allowed_tools", "prefix", "timeout", "required", "<<",
)
TRICKY_STRINGS = (
    "", " ", "voice-runtime/v1", "openai", "deepgram", "cartesia", "silero", "clock.now", "${VR_TEST_SET}",
    "${VR_TEST_UNSET}", "${VR_TEST_UNSET:-dflt}", "${VR_TEST_EMPTY:-dflt}", "$$", "$", "${", "0x1F", "0o17", "1e3",
    "1.5e-3", ".inf", "-.inf", ".nan", "1_000", "007", "+1", "-0", "1.", ".5", "~", "null", "Null", "NULL", "yes",
    "No", "on", "off", "True", "FALSE", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "12:30:45", "=", "<<", "#x",
    "- x", "a: b", "&a", "*a", "!!str", "?", "|", ">", "'", '"', "\\", "\t", "\x85", "\u2028", "\ufeff", "é", "\x00",
    "two\nlines", "cr\rhere", "\n",
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(TRICKY_STRINGS),
)
keys = st.one_of(
    st.sampled_from(SPEC_KEYS),
    st.text(max_size=12),
    st.sampled_from(TRICKY_STRINGS),
    st.integers(min_value=-3, max_value=3),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=25,
)
providers = st.sampled_from(("openai", "deepgram", "cartesia", "silero", "nope"))
provider_blocks = st.fixed_dictionaries(
    {"provider": providers}, optional={"model": scalars, "voice": scalars, "temperature": scalars, "language": scalars}
)
spec_like = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {"apiVersion": st.sampled_from(("voice-runtime/v1", "voice-runtime/v2", 1))},
        optional={
            "name": st.one_of(st.sampled_from(("agent", "a.b-c_1", "-bad", "")), st.text(max_size=10)),
            "instructions": st.one_of(st.text(max_size=40), scalars),
            "instructions_file": st.sampled_from(("missing.md", "", ".", "spec.yaml")),
            "greeting": scalars,
            "realtime": st.one_of(provider_blocks, values),
            "pipeline": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "stt": provider_blocks,
                        "llm": st.one_of(provider_blocks, st.lists(provider_blocks, max_size=3)),
                        "tts": provider_blocks,
                        "vad": provider_blocks,
                        "turn_detection": st.sampled_from(("vad", "stt", "realtime_llm", "nope")),
                        "text_only": st.one_of(st.booleans(), scalars),
                    },
                ),
                values,
            ),
            "mcp_servers": st.dictionaries(
                st.one_of(st.sampled_from(("clock", "search", "bad name")), st.text(max_size=8)),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "command": st.sampled_from(("mcp-server-time", "")),
                        "args": st.lists(scalars, max_size=3),
                        "url": st.sampled_from(("http://127.0.0.1:1/mcp", "not a url", "${VR_TEST_SET}")),
                        "headers": st.dictionaries(st.text(max_size=8), scalars, max_size=2),
                        "timeout": scalars,
                        "allowed_tools": st.lists(scalars, max_size=3),
                    },
                ),
                max_size=2,
            ),
            "tools": st.lists(st.one_of(st.sampled_from(("clock.now", "clock.days_until", "nope.x")), scalars), max_size=3),
        },
    ),
    st.dictionaries(keys, values, max_size=3),
)
documents = st.one_of(values, spec_like, spec_like)


@st.composite
def dumped(draw: st.DrawFn, docs: st.SearchStrategy[object] = documents) -> str:
    """A document as PyYAML writes it, in one of its styles."""
    doc = draw(docs)
    return yaml.safe_dump(
        doc,
        sort_keys=False,
        default_flow_style=draw(st.sampled_from((False, True, None))),
        allow_unicode=draw(st.booleans()),
        width=draw(st.sampled_from((12, 80, 10_000))),
        indent=draw(st.integers(min_value=2, max_value=6)),
        explicit_start=draw(st.booleans()),
        canonical=draw(st.sampled_from((False, False, False, True))),
    )


TOKENS = (
    "apiVersion: voice-runtime/v1", "instructions: hi", "realtime: {provider: openai}", "realtime:", "provider: openai",
    "name: x", "pipeline:", "llm:", "- ", "-", ":", ": ", "  ", "k", "key:", "key: v", "? k", "&a", "*a", "&a x", "<<: *a",
    "!!str", "!!int", "!!python/object:os.system", "!local", "|", ">", "|-", ">+", "|2", "|#c", ">-1", "'", '"', "''",
    '"\\u00e9"', '"\\x85"', "#", " # c", "{", "}", "[", "]", ",", "{a: 1, b: [2, 3]}", "[a, {b: c}]", "---", "...",
    "%YAML 1.2", "%YAML 1.1", "%TAG !e! tag:e.com,2000:", "0x1F", "0o17", "1e3", ".inf", ".NaN", "1_000", "2001-12-14",
    "~", "null", "yes", "on", "True", "1.", ".5", "+1", "007", "${VR_TEST_SET}", "${VR_TEST_UNSET}", "${X:-d}", "$$",
    "\t", "\x85", "\u2028", "\ufeff", "é", "\\", "\x00", "\x1b", "!!int x", "!!bool x", "!!float", '"\\U00110000"',
)
lines = st.builds(
    lambda indent, parts, sep: " " * indent + sep.join(parts),
    st.integers(min_value=0, max_value=6),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)), max_size=5),
    st.sampled_from((" ", "", ": ")),
)
yamlish = st.builds(
    lambda head, body, eol: head + eol.join(body),
    st.sampled_from(("", HEAD)),
    st.lists(lines, max_size=12),
    st.sampled_from(("\n", "\n", "\r\n", "\r")),
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid spec (as written by hand, or dumped) with a few characters changed."""
    text = draw(st.one_of(st.just(VALID), st.sampled_from(EXAMPLE_TEXTS), dumped(spec_like)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=3))
        insert = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)))
        text = text[:at] + insert + text[at + cut :]
    return text


# what people write by hand: block mappings and sequences of plain, quoted and block
# scalars, in every number, boolean and null spelling YAML 1.1 and 1.2 disagree on
PLAIN_VALUES = (
    "1.0", "-0.0", "+1.5", "1.5e3", "0.", "00.5", "+0", "-0", "1_0", ".5", "5.", "1e5", "0b1", "0x10", "-012", "0o7", "1,000",
    "１", "+.5", ".Inf", ".NAN", "True", "TRUE", "tRUE", "yes", "~", "Null", "nULL", "false", "2001-01-01", "12:30", "1:20:30",
    "-", "-1-", "a b", "a #b", "a#b", "x:y", "'q'", '"d"', "'it''s'", '"\\t"', '"\\x41"', '"\\U0001F600"', '""', "''", "=",
    "[]", "{}", "[a, b,]", "{a: [b, {c: d}]}", "é", "😀", "a\\b", "a'b", 'a"b', "x  # trailing", "x ", "",
)
BLOCK_HEADERS = ("|", "|-", "|+", ">", ">-", ">+", "|1", "|2", ">2", "|2-", "|-2", "| # c")
HAND_KEYS = ("a", "b", "apiVersion", "instructions", "greeting", "x y", "'q k'", '"d k"', "1", "true", "~", "é", "a.b")
block_lines = st.lists(
    st.builds(lambda n, c: " " * n + c, st.integers(min_value=0, max_value=5),
              st.sampled_from(("", "", "a", "b c", "  x", "#c", "- y", "k: v"))),
    max_size=5,
)


@st.composite
def handwritten(draw: st.DrawFn, depth: int = 0) -> str:
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        key = draw(st.sampled_from(HAND_KEYS))
        kind = draw(st.sampled_from(("plain", "plain", "block", "seq", "map") if depth < 2 else ("plain", "block")))
        if kind == "plain":
            out.append(f"{key}: {draw(st.sampled_from(PLAIN_VALUES))}{draw(st.sampled_from(('', ' # c')))}")
        elif kind == "block":
            out.append(f"{key}: {draw(st.sampled_from(BLOCK_HEADERS))}")
            out.extend(draw(block_lines))
        elif kind == "seq":
            out.append(f"{key}:")
            out.extend(f"{draw(st.sampled_from(('', '  ')))}- {draw(st.sampled_from(PLAIN_VALUES))}"
                       for _ in range(draw(st.integers(min_value=0, max_value=3))))
        else:
            out.append(f"{key}:")
            out.extend("  " + line for line in draw(handwritten(depth + 1)).splitlines())
    return "\n".join(out) + draw(st.sampled_from(("\n", "", "\n\n", "\n...\n")))


handwritten_specs = st.builds(lambda body: HEAD + body, handwritten())

EXAMPLE_TEXTS = tuple(
    p.read_text(encoding="utf-8") for p in sorted((Path(__file__).resolve().parents[2] / "agents.d").glob("*.yaml"))
) or (VALID,)
any_text = st.one_of(dumped(), yamlish, mutated(), handwritten(), handwritten_specs, st.text(max_size=200))


# -- the loader ---------------------------------------------------------------------


@FUZZ
@given(text=dumped())
def test_any_yaml_document_gives_a_spec_or_spec_errors_never_an_exception(text: str) -> None:
    data = text.encode("utf-8")
    result, path = load_bytes(data)
    event("accepted" if isinstance(result, LoadedSpec) else "refused")
    assert_spec_or_errors(result, path, data)


@FUZZ
@given(text=st.one_of(yamlish, mutated(), handwritten(), handwritten_specs, st.text(max_size=300)))
@example(text=HEAD + "greeting: !!int x\n")  # found by fuzzing: ruamel raises ValueError
@example(text=HEAD + 'greeting: !!bool ""\n')  # KeyError
@example(text=HEAD + 'greeting: "\\U00110000"\n')  # ValueError from chr()
@example(text=HEAD + '"two\\nlines": 1\n')  # the key path holds a line break
@example(text=HEAD + 'tools: ["two\\nlines"]\n')  # the message quotes a value with a line break
def test_any_text_gives_a_spec_or_spec_errors_never_an_exception(text: str) -> None:
    data = text.encode("utf-8")
    result, path = load_bytes(data)
    event("accepted" if isinstance(result, LoadedSpec) else "refused")
    assert_spec_or_errors(result, path, data)


@FUZZ
@example(data=b"!!int")  # found by fuzzing: ruamel raises IndexError
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda a, b: a + b, st.sampled_from((b"", VALID.encode(), b"\xef\xbb\xbf" + VALID.encode())), st.binary(max_size=40)),
        st.builds(lambda t, enc: t.encode(enc, errors="replace"), any_text, st.sampled_from(("utf-16", "latin-1", "utf-8-sig"))),
    )
)
def test_any_bytes_give_a_spec_or_spec_errors_never_an_exception(data: bytes) -> None:
    result, path = load_bytes(data)
    event("accepted" if isinstance(result, LoadedSpec) else "refused")
    assert_spec_or_errors(result, path, data)


def outcome(result: LoadedSpec | list[SpecError]) -> object:
    """What a user can observe of a load: the accepted spec, or the printed errors."""
    if isinstance(result, LoadedSpec):
        return ("spec", result.name, result.instructions, result.digest, result.templates,
                result.spec.model_dump(mode="json", exclude_unset=True))
    return ("errors", [str(e) for e in result])


# found by fuzzing: libyaml takes a block scalar whose first line holds only spaces, ruamel refuses it
BLANK_LINE_FIRST = HEAD + "instructions: |\n \n   hello\nrealtime: {provider: openai}\n"


@FUZZ
@given(text=any_text)
@example(text=BLANK_LINE_FIRST)
def test_fast_and_ruamel_paths_agree_on_any_document(text: str) -> None:
    fast_taken = yaml_fast.fast_compose(text) is not None
    event("fast path taken" if fast_taken else "ruamel only")
    data = text.encode("utf-8")
    fast, reference = load_both_ways(data)
    assert outcome(fast) == outcome(reference)


@FUZZ
@given(text=st.one_of(dumped(), dumped(spec_like), yamlish, mutated(), handwritten(), handwritten_specs))
@example(text=BLANK_LINE_FIRST)
def test_fast_path_reads_every_document_it_accepts_exactly_like_ruamel(text: str) -> None:
    """Below the loader's output: the plain data and every key's and value's position,
    so a difference no error happens to show (a number read as a string, a key one
    column off) is found too."""
    tree = yaml_fast.fast_compose(text)
    event("fast path taken" if tree is not None else "ruamel only")
    if tree is None:
        return
    reference = SpecLoader(plugins(), env=ENV)._parse("spec.yaml", text)
    assert not isinstance(reference, SpecError), f"the fast path accepted what ruamel refuses: {reference}"
    fast_walker = yaml_tree.Walker("spec.yaml", ENV)
    ruamel_walker = yaml_tree.Walker("spec.yaml", ENV)
    fast_data, ruamel_data = fast_walker.convert(tree), ruamel_walker.convert(reference)
    assert repr(fast_data) == repr(ruamel_data)  # repr: 1 and 1.0 and True must not pass for each other
    assert fast_walker.key_locs == ruamel_walker.key_locs
    assert fast_walker.value_locs == ruamel_walker.value_locs
    assert [str(e) for e in fast_walker.errors] == [str(e) for e in ruamel_walker.errors]


# Not "$" (expanded) nor BOM; not NEL, LS, PS either: PyYAML writes them raw inside quotes
# with allow_unicode, where YAML 1.1-minded readers (PyYAML, ruamel) fold them into a space
string_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="$\ufeff\x85\u2028\u2029", exclude_categories=["Cs"]),
    min_size=1,
    max_size=60,
)


@FUZZ
@given(instructions=string_values, greeting=string_values, name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
       style=st.sampled_from(('"', "'", "|", ">")), flow=st.booleans(), allow_unicode=st.booleans())
def test_any_string_values_come_back_exactly_from_a_valid_spec(
    instructions: str, greeting: str, name: str, style: str, flow: bool, allow_unicode: bool
) -> None:
    doc = {"apiVersion": "voice-runtime/v1", "name": name, "instructions": instructions, "greeting": greeting,
           "realtime": {"provider": "openai"}}
    # never plain style: a plain "08" is a string to PyYAML (YAML 1.1) and the number 8 to YAML 1.2
    data = yaml.safe_dump(doc, sort_keys=False, default_style=style, default_flow_style=flow, allow_unicode=allow_unicode)
    result, reference = load_both_ways(data.encode("utf-8"))
    assert isinstance(result, LoadedSpec), [str(e) for e in result]
    assert (result.name, result.instructions, result.spec.greeting) == (name, instructions, greeting)
    assert outcome(result) == outcome(reference)


# -- the catalog: a model of what must be served ------------------------------------

FILES = ("a.yaml", "b.yaml", "c.yaml")
NAMES = (None, "a", "b", "x")  # None: the file's stem, so stems and explicit names collide
PROMPTS = ("p1.md", "p2.md")
INVALID_KINDS = ("unknown-key", "truncated", "not-yaml", "not-utf8", "wrong-type", "empty")
instruction_texts = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "Zs"], exclude_characters="$"), min_size=1, max_size=20
)


def spec_bytes(name: str | None, *, instructions: str | None = None, prompt: str | None = None) -> bytes:
    """A valid spec. Strings are JSON-quoted: PyYAML (YAML 1.1) leaves ``08`` plain,
    which YAML 1.2 reads as the number 8."""
    text = HEAD
    if name is not None:
        text += f"name: {json.dumps(name)}\n"
    if prompt is not None:
        text += f"instructions_file: prompts/{prompt}\n"
    else:
        text += f"instructions: {json.dumps(instructions)}\n"
    return (text + "realtime:\n  provider: openai\n").encode("utf-8")  # last: any truncation loses it


def invalid_bytes(kind: str, cut: int) -> bytes:
    valid = spec_bytes("x", instructions="an edit in progress")
    return {
        "unknown-key": valid + b"modle: gpt\n",
        "truncated": valid[: cut % (len(valid) - 1)],  # at least "i\n" of "provider: openai\n" is gone
        "not-yaml": HEAD.encode() + b"instructions: [unclosed\n",
        "not-utf8": HEAD.encode() + b"instructions: caf\xe9\nrealtime: {provider: openai}\n",
        "wrong-type": HEAD.encode() + b"instructions: hi\nrealtime: 5\n",
        "empty": b"",
    }[kind]


@dataclass(frozen=True)
class Version:
    """What an agent serves: the file it came from, and exactly which content."""

    file: str
    name: str
    instructions: str
    digest: str


@dataclass(frozen=True)
class Written:
    data: bytes
    name: str | None = None  # None with valid=True: the stem
    instructions: str | None = None
    prompt: str | None = None
    valid: bool = True


def write_atomically(path: Path, data: bytes) -> None:
    """As editors save: a new file beside it, renamed over it (a new inode)."""
    tmp = path.parent / f".tmp-{path.name}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def served(catalog: Catalog) -> dict[str, Version]:
    return {
        name: Version(entry.loaded.path.name, entry.loaded.name, entry.loaded.instructions, entry.loaded.digest)
        for name, entry in catalog.agents.items()
    }


class CatalogMachine(RuleBasedStateMachine):
    """Edits a folder of three spec files (and two instructions files) at random and
    reloads; after every reload the catalog serves exactly what the model says."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        root = Path(self._tmp.name)
        self.folder = root / "agents"
        (self.folder / "prompts").mkdir(parents=True)
        self.catalog = Catalog(self.folder, plugins(), state_dir=root / "state")
        self.files: dict[str, Written] = {}
        self.prompts: dict[str, bytes] = {}
        self.expected: dict[str, Version] = {}  # name -> what the model says is served
        self.generations: dict[str, int] = {}

    def teardown(self) -> None:
        self._tmp.cleanup()

    # -- edits --

    @initialize(file=st.sampled_from(FILES), name=st.sampled_from(NAMES), text=instruction_texts)
    def start_with_one_valid_spec(self, file: str, name: str | None, text: str) -> None:
        self.write_valid_spec(file, name, text)
        self.reload()

    @rule(file=st.sampled_from(FILES), name=st.sampled_from(NAMES), text=instruction_texts)
    def write_valid_spec(self, file: str, name: str | None, text: str) -> None:
        """Add a spec, give it new instructions, or change its `name:`."""
        data = spec_bytes(name, instructions=text)
        write_atomically(self.folder / file, data)
        self.files[file] = Written(data, name, instructions=text)

    @rule(file=st.sampled_from(FILES), name=st.sampled_from(NAMES), prompt=st.sampled_from(PROMPTS))
    def write_spec_with_instructions_file(self, file: str, name: str | None, prompt: str) -> None:
        data = spec_bytes(name, prompt=prompt)
        write_atomically(self.folder / file, data)
        self.files[file] = Written(data, name, prompt=prompt)

    @rule(prompt=st.sampled_from(PROMPTS), text=instruction_texts)
    def write_instructions_file(self, prompt: str, text: str) -> None:
        data = text.encode()
        write_atomically(self.folder / "prompts" / prompt, data)
        self.prompts[prompt] = data

    @precondition(lambda self: self.prompts)
    @rule(data=st.data())
    def delete_instructions_file(self, data: st.DataObject) -> None:
        prompt = data.draw(st.sampled_from(sorted(self.prompts)))
        (self.folder / "prompts" / prompt).unlink()
        del self.prompts[prompt]

    @rule(file=st.sampled_from(FILES), kind=st.sampled_from(INVALID_KINDS), cut=st.integers(min_value=0, max_value=10_000))
    def write_invalid_spec(self, file: str, kind: str, cut: int) -> None:
        data = invalid_bytes(kind, cut)
        write_atomically(self.folder / file, data)
        self.files[file] = Written(data, valid=False)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete_spec(self, data: st.DataObject) -> None:
        file = data.draw(st.sampled_from(sorted(self.files)))
        (self.folder / file).unlink()
        del self.files[file]

    @precondition(lambda self: self.files)
    @rule(data=st.data(), destination=st.sampled_from(FILES))
    def move_spec(self, data: st.DataObject, destination: str) -> None:
        """`mv a.yaml b.yaml`: the content keeps its inode and mtime under another path."""
        source = data.draw(st.sampled_from(sorted(self.files)))
        os.replace(self.folder / source, self.folder / destination)
        self.files[destination] = self.files.pop(source)

    @precondition(lambda self: len(self.files) > 1)
    @rule()
    def delete_every_spec_at_once(self) -> None:
        for file in list(self.files):
            (self.folder / file).unlink()
        self.files.clear()

    # -- the model --

    def current(self, file: str) -> Version | None:
        """The version a file's bytes (and instructions file) give now, None when invalid."""
        written = self.files[file]
        if not written.valid:
            return None
        name = written.name or Path(file).stem
        if written.prompt is None:
            return Version(file, name, written.instructions or "", hashlib.sha256(written.data).hexdigest())
        body = self.prompts.get(written.prompt)
        if body is None:
            return None
        return Version(file, name, body.decode(), hashlib.sha256(written.data + body).hexdigest())

    def expect(self) -> tuple[dict[str, Version], set[str]]:
        """(name -> version served after a reload, files that must be reported)."""
        current = {file: self.current(file) for file in sorted(self.files)}
        claims: dict[str, list[str]] = {}
        for file, version in current.items():
            if version is not None:
                claims.setdefault(version.name, []).append(file)
        failed = {f for f, v in current.items() if v is None or len(claims[v.name]) > 1}
        served_by = {v.file: v for v in self.expected.values()}
        after: dict[str, Version] = {}
        for file in sorted(failed):  # an invalid file keeps serving its last valid version
            if file in served_by:
                after[served_by[file].name] = served_by[file]
        blocked = set()
        for file, version in current.items():
            if file in failed:
                continue
            if version.name in after:  # held by another file's last valid version
                blocked.add(file)
            else:
                after[version.name] = version
        return after, failed | blocked

    @rule()
    def reload(self) -> None:
        before, generation_before = dict(self.expected), self.catalog.generation
        result = self.catalog.reload()
        note(f"files: { {f: w.data for f, w in self.files.items()} }; prompts: {self.prompts}")
        note(f"reload: {result.summary()}; errors: {[str(e) for e in result.errors]}")
        if not self.files:  # the folder emptied: refused, everything keeps serving (if anything did)
            if before:
                assert result.refused, result.summary()
                assert not result.ok
            assert not result.changed
            assert served(self.catalog) == before
            assert self.catalog.generation == generation_before
            self.check_published()
            return
        after, reported = self.expect()
        self.expected = after
        assert result.refused is None, result.summary()
        assert served(self.catalog) == after
        assert sorted(result.added) == sorted(set(after) - set(before)), result.summary()
        assert sorted(result.removed) == sorted(set(before) - set(after)), result.summary()
        assert sorted(result.updated) == sorted(n for n in set(before) & set(after) if before[n] != after[n]), result.summary()
        error_files = {Path(e.file).name for e in result.errors}
        assert error_files == reported, f"files reported: {sorted(error_files)}; expected: {sorted(reported)}"
        assert result.ok == (not reported)
        self.check_generations(result, generation_before)
        self.check_published()

    def check_generations(self, result: ReloadResult, generation_before: int) -> None:
        if result.changed:
            assert self.catalog.generation == result.generation == generation_before + 1
        else:
            assert self.catalog.generation == generation_before
        for name, entry in self.catalog.agents.items():
            if name in result.added or name in result.updated:
                assert entry.generation == self.catalog.generation
            else:  # a version that did not change keeps the generation that accepted it
                assert entry.generation == self.generations[name]
        self.generations = {name: entry.generation for name, entry in self.catalog.agents.items()}

    def check_published(self) -> None:
        """What a job process reads is what the parent serves."""
        for name, entry in self.catalog.agents.items():
            loaded, generation = read_published(self.catalog.state_dir, name, plugins())
            assert (loaded.digest, loaded.instructions, generation) == (entry.loaded.digest, entry.loaded.instructions, entry.generation)


def test_each_served_agent_is_the_last_valid_version_of_its_file() -> None:
    run_state_machine_as_test(
        CatalogMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=30,
            deadline=None,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


# -- the catalog: targeted cases ----------------------------------------------------


@contextmanager
def catalog_folder() -> Iterator[tuple[Path, Catalog]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "agents"
        (folder / "prompts").mkdir(parents=True)
        yield folder, Catalog(folder, plugins(), state_dir=Path(tmp) / "state")


def test_deleting_every_spec_at_once_is_refused_and_every_agent_keeps_serving() -> None:
    with catalog_folder() as (folder, catalog):
        write_atomically(folder / "a.yaml", spec_bytes(None, instructions="one"))
        write_atomically(folder / "b.yaml", spec_bytes(None, instructions="two"))
        assert catalog.reload().added == ["a", "b"]
        (folder / "a.yaml").unlink()
        (folder / "b.yaml").unlink()
        result = catalog.reload()
        assert result.refused and not result.changed
        assert {n: v.instructions for n, v in served(catalog).items()} == {"a": "one", "b": "two"}
        write_atomically(folder / "c.yaml", spec_bytes(None, instructions="three"))
        result = catalog.reload()
        assert (result.added, result.removed) == (["c"], ["a", "b"])


def test_a_name_held_by_a_failing_files_last_good_version_is_refused_whatever_the_file_order() -> None:
    """holder.yaml serves `x`, then breaks; claimant.yaml now says `name: x`. The holder's
    last good version keeps `x` and the claimant is told why it is not served, whichever
    of the two files sorts first."""
    for holder, claimant in (("a.yaml", "b.yaml"), ("b.yaml", "a.yaml")):
        with catalog_folder() as (folder, catalog):
            write_atomically(folder / holder, spec_bytes("x", instructions="held"))
            write_atomically(folder / claimant, spec_bytes("y", instructions="claimant one"))
            assert sorted(catalog.reload().added) == ["x", "y"]
            write_atomically(folder / holder, invalid_bytes("unknown-key", 0))
            write_atomically(folder / claimant, spec_bytes("x", instructions="claimant two"))
            result = catalog.reload()
            assert served(catalog)["x"].file == holder, f"holder {holder}"
            assert served(catalog)["x"].instructions == "held", f"holder {holder}"
            assert result.removed == ["y"], f"holder {holder}"
            assert result.updated == [], f"holder {holder}: the served version of x did not change: {result.summary()}"
            assert claimant in {Path(e.file).name for e in result.errors}, (
                f"holder {holder}: {claimant}'s edit is not served and not reported: {[str(e) for e in result.errors]}"
            )


def test_a_spec_is_accepted_once_its_missing_instructions_file_appears() -> None:
    with catalog_folder() as (folder, catalog):
        write_atomically(folder / "a.yaml", spec_bytes(None, prompt="p1.md"))
        result = catalog.reload()
        assert [e.key_path for e in result.errors] == ["instructions_file"]
        write_atomically(folder / "prompts" / "p1.md", b"now it exists")
        result = catalog.reload()
        assert result.ok, [str(e) for e in result.errors]
        assert served(catalog)["a"].instructions == "now it exists"


def test_a_same_size_rewrite_within_one_mtime_tick_is_not_missed() -> None:
    """An in-place save of as many bytes, within the same timestamp tick: on filesystems
    with coarse timestamps (kernels before multigrain timestamps: one jiffy; FAT: 2 s;
    some network filesystems: 1 s) inode, size and mtime all stay the same. The tick
    is reproduced by setting mtime back to what it was."""
    with catalog_folder() as (folder, catalog):
        path = folder / "a.yaml"
        path.write_bytes(spec_bytes(None, instructions="version one"))
        before = os.stat(path)
        assert catalog.reload().added == ["a"]
        with open(path, "r+b") as fh:  # in place: same inode
            fh.write(spec_bytes(None, instructions="version two"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(path)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
        result = catalog.reload()
        assert served(catalog)["a"].instructions == "version two", result.summary()


class RewriteWhileRead:
    """A plugin whose hook runs while the loader holds the bytes it read: the file is
    saved again at that moment, as an editor may do at any time."""

    def __init__(self) -> None:
        self.armed: Path | None = None

    @voice_runtime.hookimpl
    def voice_runtime_adjust_spec_data(self, data: dict, path: Path) -> None:
        if self.armed is not None and path == self.armed:
            self.armed = None
            write_atomically(path, spec_bytes(None, instructions="saved while being read"))


def test_a_save_made_while_the_file_is_being_read_is_not_missed() -> None:
    plugin = RewriteWhileRead()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "agents"
        folder.mkdir()
        catalog = Catalog(folder, make_plugin_manager(None, entry_points=False, extra=[plugin]), state_dir=Path(tmp) / "state")
        path = folder / "a.yaml"
        write_atomically(path, spec_bytes(None, instructions="first"))
        plugin.armed = path
        catalog.reload()
        assert plugin.armed is None  # the save happened during the read
        catalog.reload()  # the file changed since it was read: read it again
        assert served(catalog)["a"].instructions == "saved while being read"
