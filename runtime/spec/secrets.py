"""Secrets: which values must never be shown, and the one ``redact``.

A secret is a value that came from ``${VAR}`` in a spec (a header, a URL, an
``env:`` entry...), every secret field of a provider (``api_key``, whether
written as ``${VAR}`` or not), and credentials in the environment that providers
read by themselves (``OPENAI_API_KEY``...). Each is shown as the ``${VAR}`` text it
came from (``**********`` for a literal secret field).

A value leaves the process in more shapes than the one it was written in: a
mounted Kubernetes Secret ends in ``\\n`` and is shown stripped or escaped
(``b'Bearer abc\\n'`` in httpx's "Illegal header value"), a URL percent-encodes it
(``%20`` or ``+`` for a space, ``%C3%A9`` for ``é``), JSON and ``repr`` escape it
(``\\"``, ``\\u00e9``, ``\\xc3\\xa9``), possibly twice (a ``repr`` inside a JSON log
line), and Basic auth base64-encodes it. ``SecretSet`` compiles, per value, one
pattern in which every character may take any of those shapes, and one regex
alternation of all values, rebuilt only when the set changes: a log line pays
one regex scan.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from pydantic import SecretBytes, SecretStr

if TYPE_CHECKING:
    from .loader import LoadedSpec

MIN_LENGTH = 4  # shorter values ("en", "1") would blot out ordinary words
MASK = "**********"  # pydantic's own mask, for a secret field written literally
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_VAR_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# credentials providers read from the environment when a spec gives no api_key
_CREDENTIAL_ENV = re.compile(r"(?:^|_)(?:API_?KEY|API_SECRET|SECRET|TOKEN|PASSWORD)$")
_MIN_ENV_LENGTH = 8  # the environment holds short flags ("1", "true") under such names too


# credentials quoted by a remote server's error text (some echo the request's
# Authorization header: a Basic client id:secret, a bearer token) and JWTs: masked even
# when they are no secret we know of (LiveKit's API, OAuth authorization servers)
_REMOTE_TOKEN = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=%-]+"
                           r"|\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def mask_tokens(text: str, label: str = MASK) -> str:
    """``text`` (a remote error) with any ``Basic``/``Bearer`` credential and any JWT
    replaced by ``label`` (the scheme word kept as written)."""
    return _REMOTE_TOKEN.sub(lambda m: f"{m.group(1)} {label}" if m.group(1) else label, text)


def defaulted_vars(template: str) -> list[str]:
    """The names of the ``${VAR:-default}`` references of ``template``."""
    return [m.group(1) for m in _VAR_REF.finditer(template) if m.group(2) is not None]


def reveal(value: Any) -> Any:
    """The plain value of a pydantic secret field (anything else unchanged)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return value.get_secret_value().decode("utf-8", "surrogateescape")
    return value


def _lookup(data: Any, path: str) -> Any:
    value = data
    for key, index in _PATH_PART.findall(path):
        if key and isinstance(value, list) and len(value) == 1:
            value = value[0]  # `llm: {...}` in the file is a one-item chain in the model
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return reveal(value)


def _pieces(template: str, value: str) -> list[tuple[str, str]]:
    """``("Bearer ${TOKEN}", "Bearer abc")`` -> ``[("abc", "${TOKEN}")]``: each variable's
    part of an expanded value (the whole value if the template does not match it). A
    part that is the default written in the template is no secret: it is in the file,
    and redacting it would garble the template text that status output shows."""
    names: list[tuple[str, str | None]] = []
    pattern, last = "", 0
    for match in _VAR_REF.finditer(template):
        pattern += re.escape(template[last:match.start()])
        if match.group(1):
            pattern += "(.*?)"
            names.append((f"${{{match.group(1)}}}", match.group(2)))
        else:
            pattern += re.escape("$")
        last = match.end()
    pattern += re.escape(template[last:])
    found = re.fullmatch(pattern, value, re.DOTALL)
    if not found:
        return [(value, template)]
    return [(piece, shown) for piece, (shown, default) in zip(found.groups(), names) if piece != default]


def _secret_fields(value: Any, out: dict[str, str], path: str = "") -> None:
    """Every SecretStr in a dumped model, by key path."""
    if isinstance(value, (SecretStr, SecretBytes)):
        out[path] = reveal(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _secret_fields(item, out, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _secret_fields(item, out, f"{path}[{i}]")


def expanded_values(loaded: LoadedSpec) -> dict[str, str]:
    """Each secret of a spec -> the text shown instead (``${VAR}``)."""
    data: Any = loaded.spec.model_dump()
    out: dict[str, str] = {}
    secret_fields: dict[str, str] = {}
    _secret_fields(data, secret_fields)
    for value in secret_fields.values():
        out[value] = MASK  # a literal api_key is as secret as one from ${VAR}
    for path, template in loaded.templates.items():
        value = _lookup(data, path)
        if not isinstance(value, str):
            continue
        for piece, shown in _pieces(template, value):
            out[piece] = shown
    return {value: shown for value, shown in out.items() if len(value.strip()) >= MIN_LENGTH}


def environment_credentials(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Credentials in the environment (``OPENAI_API_KEY``...) -> ``${NAME}``."""
    environ = os.environ if environ is None else environ
    return {value: f"${{{name}}}" for name, value in environ.items()
            if _CREDENTIAL_ENV.search(name.upper()) and len(value.strip()) >= _MIN_ENV_LENGTH}


# -- the shapes of one value ----------------------------------------------------------

_BS = r"\\+"  # one or more backslashes: an escape, or an escape escaped again


def _hex(byte: int, width: int = 2) -> str:
    """A hex number matching either case: 0xe9 -> ``[eE]9``."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{byte:0{width}x}")


_SHORT_ESCAPES = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f"}


def _char_pattern(char: str) -> str:
    """Every shape one character takes in logs, JSON, repr and URLs."""
    code = ord(char)
    utf8 = char.encode("utf-8", "surrogatepass")
    shapes = [re.escape(char)]
    shapes.append("".join("%" + _hex(b) for b in utf8))  # URL (quote, quote_plus, httpx)
    if char == " ":
        shapes.append(r"\+")  # quote_plus, form encoding
    if char in _SHORT_ESCAPES:
        shapes.append(_BS + _SHORT_ESCAPES[char])
    if char in "\"'\\/":
        shapes.append(_BS + re.escape(char))  # \" in JSON, \' in repr, \\ everywhere, \/ in JSON
    if code < 0x20 or code >= 0x7F:
        if code < 0x100:
            shapes.append(_BS + "x" + _hex(code))  # repr / ascii() of a str
        if code < 0x10000:
            shapes.append(_BS + "u" + _hex(code, 4))  # JSON, ascii()
        else:
            shapes.append(_BS + "U" + _hex(code, 8))  # ascii()
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            shapes.append(_BS + "u" + _hex(high, 4) + _BS + "u" + _hex(low, 4))  # JSON surrogate pair
        if len(utf8) > 1:
            shapes.append("".join(_BS + "x" + _hex(b) for b in utf8))  # repr of the bytes
    return shapes[0] if len(shapes) == 1 else "(?:" + "|".join(shapes) + ")"


def _base64_shapes(value: str) -> list[str]:
    """The base64 text of ``value`` at each of the three byte alignments it can have
    inside a longer string (``user:${PASS}`` in a Basic auth header): the characters
    that depend only on the value. An OAuth client secret is percent-encoded before
    it is base64-encoded (RFC 6749 2.3.1: ``client_secret_basic`` sends
    ``base64(urlencode(id) ":" urlencode(secret))``), so those forms are covered too."""
    out = []
    for form in dict.fromkeys((value, quote(value, safe=""), quote_plus(value, safe=""))):
        raw = form.encode("utf-8", "surrogatepass")
        for offset in range(3):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                text = encode(b"\0" * offset + raw).decode().rstrip("=")
                start = 4 if offset else 0
                end = len(text) - (0 if (offset + len(raw)) % 3 == 0 else 3)
                middle = text[start:end]
                if len(middle) >= 8:
                    out.append(middle)
    return list(dict.fromkeys(out))


_B64_EDGE = "[A-Za-z0-9+/_-]"
_UNRESERVED_RUN = re.compile(r"[A-Za-z0-9_.~-]+")


def _anchors(value: str) -> list[str]:
    """Literal text every shape of ``value`` contains: URL encoding, JSON and repr
    leave letters, digits and ``_.~-`` as they are (base64 shapes are literal)."""
    runs = _UNRESERVED_RUN.findall(value)
    longest = max(runs, key=len, default="")
    return [longest] if len(longest) >= 3 else []


def _value_pattern(value: str) -> str:
    shapes = ["".join(_char_pattern(c) for c in value)]
    # the base64 groups on either side mix the value's first and last bytes with
    # their neighbours': they go too, or a Basic header would keep a character or two
    shapes += [_B64_EDGE + "{0,4}" + re.escape(b) + _B64_EDGE + "{0,4}=*" for b in _base64_shapes(value)]
    return "|".join(dict.fromkeys(shapes))


class SecretSet:
    """Values never to be shown, each with the text shown instead.

    One set per process, made by the command that runs (``cli``) and handed to
    whatever fills it (the catalog as it accepts specs) and whatever writes text
    out (log formatters, ``RedactingStream``, /status)."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._shown: dict[str, str] = {}
        self._lock = threading.Lock()
        self._regex: re.Pattern[str] | None = None
        self._labels: list[str] = []
        # a cheap test before the regex: most text holds no secret, and `in` on a
        # few literals costs far less than the alternation (31 µs a line for 20 values)
        self._anchors: tuple[str, ...] = ()
        self._always = False
        self._stale = False
        if values:
            self.add(values)

    @classmethod
    def of(cls, specs: Iterable[LoadedSpec]) -> SecretSet:
        secrets = cls()
        secrets.add_specs(specs)
        return secrets

    def __bool__(self) -> bool:
        return bool(self._shown) or (self is not ISSUED and bool(ISSUED))

    def __contains__(self, value: str) -> bool:
        return value in self._shown

    def add(self, values: Mapping[str, str]) -> None:
        """``value -> shown``; the stripped value (a mounted file's ``\\n`` removed) too."""
        with self._lock:
            before = len(self._shown)
            for value, shown in values.items():
                for variant in (value, value.strip()):
                    if len(variant) >= MIN_LENGTH:
                        self._shown.setdefault(variant, shown)
            if len(self._shown) != before:
                self._stale = True  # compiled at the next redact: a pool makes sets it may never use

    def retain(self, values: Iterable[str]) -> None:
        """Forget every value but these (and their stripped forms): a set filled at run
        time (``ISSUED``) stays bounded."""
        keep = {v for value in values for v in (value, value.strip())}
        with self._lock:
            before = len(self._shown)
            self._shown = {v: shown for v, shown in self._shown.items() if v in keep}
            if len(self._shown) != before:
                self._stale = True

    def add_specs(self, specs: Iterable[LoadedSpec]) -> None:
        merged: dict[str, str] = {}
        for loaded in specs:
            merged.update(expanded_values(loaded))
        self.add(merged)

    def _compile(self) -> None:
        # longest first: "abc\n" must win over "abc" where both match
        values = sorted(self._shown, key=len, reverse=True)
        self._labels = [self._shown[v] for v in values]
        anchors: list[str] = []
        always = False
        for value in values:
            found = _anchors(value)
            always = always or not found
            anchors += found + _base64_shapes(value)
        self._anchors, self._always = tuple(dict.fromkeys(anchors)), always
        self._regex = re.compile("|".join(f"({_value_pattern(v)})" for v in values))

    def might_hold(self, text: str) -> bool:
        """False when ``text`` surely holds no secret in any shape (the fast path)."""
        if self._stale:
            with self._lock:
                if self._stale:
                    self._compile()
                    self._stale = False
        if self is not ISSUED and ISSUED and ISSUED.might_hold(text):
            return True
        if self._regex is None or not text:
            return False
        return self._always or any(anchor in text for anchor in self._anchors)

    def redact(self, text: str) -> str:
        if not self.might_hold(text):
            return text
        if self is not ISSUED and ISSUED:
            text = ISSUED.redact(text)
            if self._regex is None:
                return text
        regex, labels = self._regex, self._labels
        assert regex is not None
        return regex.sub(lambda m: labels[m.lastindex - 1], text)  # type: ignore[operator]

    def dumps(self, data: Any, **kwargs: Any) -> str:
        """``json.dumps`` with every string redacted before it is escaped, and the
        text once more after (for what ``default=`` turned into text)."""
        text = json.dumps(data, default=str, **kwargs)
        if not self.might_hold(text):
            return text
        return self.redact(json.dumps(self.redact_data(json.loads(text)), **kwargs))

    def redact_data(self, data: Any) -> Any:
        """``redact`` on every string in a JSON-like structure (before it is escaped)."""
        if not self._shown and not ISSUED:
            return data
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact_data(k): self.redact_data(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.redact_data(v) for v in data]
        return data


# Secrets issued while the process runs (OAuth access and refresh tokens): every
# SecretSet redacts them too, so each log formatter, status page and report made from
# a spec's set also hides the tokens fetched for that spec's servers.
ISSUED = SecretSet()


class RedactingStream(io.TextIOBase):
    """A text stream (stdout, stderr) that redacts whole lines before they reach
    the real one, so a secret split over two writes is still found. ``flush``
    writes out a partial line (a prompt) as it is."""

    def __init__(self, inner: Any, secrets: SecretSet) -> None:
        self.inner = inner
        self.secrets = secrets
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            head, sep, self._pending = self._pending.rpartition("\n")
            if sep:
                self.inner.write(self.secrets.redact(head + sep))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.inner.write(self.secrets.redact(self._pending))
                self._pending = ""
        self.inner.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)
