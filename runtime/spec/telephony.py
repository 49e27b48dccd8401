"""Phone lines as files: the SIP trunks and dispatch rules of ``agents.d/telephony/*.yaml``
(or the folder ``--telephony`` names), validated like specs at ``file:line:col``.

What LiveKit should hold is computed here as plain data (``desired``); comparing it with
what LiveKit holds and applying it is ``serve.sip_lines`` (livekit is imported only
there). Passwords are ``${VAR}`` references, never text in a file: the file is in git.
"""

from __future__ import annotations

import fnmatch
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .errors import KeyPath, SpecError
from ..core.mounted import mounted_secret
from .secrets import defaulted_vars

if typing.TYPE_CHECKING:
    from .loader import Plugins
    from .yaml_tree import Walker

TELEPHONY_FOLDER = "telephony"  # inside the specs folder, unless --telephony names another
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
# a destination pattern: E.164 digits with `*` (any digits) and `?` (one digit)
DESTINATION_PATTERN = r"^\+[0-9*?]{1,15}$"
LINE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
STARTS = "apiVersion: voice-runtime/v1"
# LiveKit keeps a trunk's or rule's numbers in one object, and a plan compares them all:
# a range beyond this is split over several trunks (and files)
MAX_NUMBERS = 1000
# a file listing more is refused before it is parsed: it could not fit the YAML guard
# (yaml_tree.MAX_NODES values) and parsing it would take seconds
MAX_FILE_NUMBERS = 5000
_A_NUMBER = re.compile(r"(?<=[\s\[,\"'])\+[0-9]")


def is_e164(value: object) -> bool:
    """A number to dial as LiveKit takes it: +, country code, number (dial, POST /calls)."""
    return isinstance(value, str) and re.fullmatch(E164_PATTERN, value) is not None


def _matching(pattern: str, what: str) -> AfterValidator:
    """A text rule whose error says what the value should be, with an example (pydantic's
    own message would quote the regex)."""

    def check(value: str) -> str:
        if re.fullmatch(pattern, value) is None:
            raise ValueError(f"{value[:40]!r} is not {what}")
        return value

    return AfterValidator(check)


E164 = Annotated[str, _matching(E164_PATTERN, "a phone number in E.164 form (+, country code and number, up to 15 "
                                              "digits, such as +14155550100)"),
                 Field(description="A phone number in E.164 form: +, country code, number.")]
Destination = Annotated[str, _matching(DESTINATION_PATTERN, "a destination pattern: + and up to 15 digits, `*` (any "
                                                            "digits) or `?` (one digit), such as +1415*")]
LineName = Annotated[str, _matching(LINE_NAME_PATTERN, "a name (1 to 63 letters, digits, '_', '.' or '-', starting "
                                                       "with a letter or digit)")]
def _port_in_range(value: str) -> str:
    port = value.rpartition("]")[2] if value.startswith("[") else value
    _, colon, digits = port.rpartition(":")
    if colon and not 1 <= int(digits) <= 65535:
        raise ValueError(f"port {digits} is out of range (1 to 65535)")
    return value


SipHost = Annotated[str, _matching(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?",
                                   "a SIP host (a name or address, optionally :port, such as example.pstn.twilio.com)"),
                    AfterValidator(_port_in_range)]


def _at_most_numbers(value: Any) -> Any:
    if isinstance(value, list) and len(value) > MAX_NUMBERS:
        raise ValueError(f"{len(value)} numbers; at most {MAX_NUMBERS} per trunk or rule (split them over several)")
    return value


Numbers = BeforeValidator(_at_most_numbers)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Auth(_Strict):
    """SIP digest credentials. The password must be a ``${VAR}``: it is read from the
    environment when the files are loaded and never printed."""

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=256)

    @field_validator("password")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # a mounted secret file's line break would be sent as part of the password;
        # the message never quotes the value
        value = mounted_secret(value)
        if not value:
            raise ValueError("the password is empty (its variable holds only a line break)")
        if "\n" in value or "\r" in value:
            raise ValueError("the password has a line break inside it")
        return value


class InboundTrunk(_Strict):
    """Calls from a SIP provider to these numbers reach LiveKit."""

    numbers: Annotated[list[E164], Numbers] = Field(min_length=1, description="The numbers callers dial.")
    allowed_addresses: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="The provider's signalling addresses or CIDR ranges; empty: any.")
    allowed_numbers: Annotated[list[E164], Numbers] = Field(default_factory=list,
                                                            description="Accept only these callers; empty: any.")
    auth: Auth | None = None


class OutboundTrunk(_Strict):
    """How LiveKit places calls through a SIP provider."""

    address: SipHost = Field(description="The provider's SIP host (such as example.pstn.twilio.com), optionally :port.")
    transport: Literal["auto", "udp", "tcp", "tls"] = "auto"
    numbers: Annotated[list[E164], Numbers] = Field(
        min_length=1, description="The caller ids calls are placed from (the first is used).")
    auth: Auth | None = None
    allowed_destinations: list[Destination] = Field(
        default_factory=list,
        description="The numbers calls may go to (`+1415*`, `+4420????????`); empty: no outbound calls.")

    def allows(self, number: str) -> bool:
        return any(fnmatch.fnmatchcase(number, pattern) for pattern in self.allowed_destinations)


class DispatchRule(_Strict):
    """Calls to these numbers (or arriving on these inbound trunks) start this agent."""

    agent: LineName = Field(description="The agent that answers (its name).")
    numbers: Annotated[list[E164], Numbers] = Field(default_factory=list,
                                                    description="The called numbers this rule takes.")
    trunks: list[LineName] = Field(default_factory=list, description="Inbound trunks (by name) whose calls it takes.")
    room_prefix: str = Field("call-", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Each call gets a new room named so.")

    @model_validator(mode="after")
    def _something(self) -> DispatchRule:
        if not self.numbers and not self.trunks:
            raise ValueError("a dispatch rule needs `numbers` or `trunks` (which calls it takes)")
        return self


class TelephonyFile(_Strict):
    """One file of ``telephony/``; names are unique across the folder."""

    apiVersion: Literal["voice-runtime/v1"]
    inbound_trunks: dict[LineName, InboundTrunk] = Field(default_factory=dict)
    outbound_trunks: dict[LineName, OutboundTrunk] = Field(default_factory=dict)
    dispatch_rules: dict[LineName, DispatchRule] = Field(default_factory=dict)

    @field_validator("inbound_trunks", "outbound_trunks", "dispatch_rules", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        return {} if value is None else value


@dataclass
class Lines:
    """Every telephony file of a folder, merged; ``secrets`` maps each password (and
    any other ``${VAR}`` value) to the ``${VAR}`` text shown instead."""

    folder: Path | None = None
    inbound: dict[str, InboundTrunk] = field(default_factory=dict)
    outbound: dict[str, OutboundTrunk] = field(default_factory=dict)
    rules: dict[str, DispatchRule] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.inbound or self.outbound or self.rules)

    def outbound_for(self, number: str, trunk: str | None = None) -> tuple[str, OutboundTrunk] | str:
        """The outbound trunk a call to ``number`` goes through, or why none may:
        ``trunk`` names one; otherwise the first (by name) whose patterns allow it."""
        if not self.outbound:
            return "no outbound trunk is declared in the telephony files"
        if trunk is not None:
            chosen = self.outbound.get(trunk)
            if chosen is None:
                return f"no outbound trunk named {trunk!r}; declared: {', '.join(sorted(self.outbound))}"
            if not chosen.allows(number):
                return f"{number} is not in allowed_destinations of outbound trunk {trunk!r}"
            return trunk, chosen
        for name in sorted(self.outbound):
            if self.outbound[name].allows(number):
                return name, self.outbound[name]
        return f"{number} is not in the allowed_destinations of any outbound trunk"


def telephony_folder(agents_dir: Path, option: Path | None = None) -> Path:
    return option if option is not None else agents_dir / TELEPHONY_FOLDER


def load_lines(folder: Path, plugins: Plugins, agents: typing.Collection[str],
               env: typing.Mapping[str, str] | None = None, *, required: bool = False) -> Lines:
    """Every ``*.yaml`` of ``folder`` checked: each file against the model, then across
    files (unique names, agents that exist, trunks that exist, one rule and one trunk
    per number, passwords from ``${VAR}``). A missing folder holds no lines unless
    ``required`` (it was named on the command line)."""
    from .loader import SPEC_SUFFIXES, SpecLoader

    lines = Lines(folder)
    if not folder.is_dir():
        if required or folder.exists():
            why = "not a directory" if folder.exists() else "no such directory"
            lines.errors.append(SpecError(str(folder), message=f"{why} (the telephony folder of *.yaml line files)"))
        return lines
    loader = SpecLoader(plugins, env)
    owners: dict[tuple[str, str], tuple[Walker, KeyPath]] = {}  # (kind, name) -> where it is declared
    numbers: dict[tuple[str, str], tuple[str, Walker, KeyPath]] = {}  # (kind, number) -> owner, where
    for path in sorted(p for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES and not p.name.startswith(".")):
        too_many = _too_many_numbers(path)
        if too_many is not None:
            lines.errors.append(too_many)
            continue
        read = loader.validate(path, TelephonyFile, "a telephony file", STARTS)
        if isinstance(read, list):
            lines.errors.extend(read)
            continue
        doc, walker = read
        for kind, items, into in (("inbound_trunks", doc.inbound_trunks, lines.inbound),
                                  ("outbound_trunks", doc.outbound_trunks, lines.outbound),
                                  ("dispatch_rules", doc.dispatch_rules, lines.rules)):
            for name, item in items.items():
                where: KeyPath = (kind, name)
                if (kind, name) in owners:
                    first = owners[(kind, name)][0]
                    lines.errors.append(walker.error(where, f"{kind[:-1].replace('_', ' ')} {name!r} is also "
                                                            f"declared in {first.file}", value=False))
                    continue
                owners[(kind, name)] = (walker, where)
                into[name] = item
                lines.errors.extend(_item_problems(kind, name, item, walker, numbers))
        for key_path, (value, template) in walker.expanded.items():
            lines.secrets[value] = template
        lines.errors.extend(_literal_passwords(doc, walker))
    lines.errors.extend(_references(lines, owners, agents))
    lines.errors.sort()
    return lines


def _too_many_numbers(path: Path) -> SpecError | None:
    """A file listing more than MAX_FILE_NUMBERS phone numbers, said at the first one
    over, before the file is parsed (a bound of its own, not the YAML guard's)."""
    from ..core.filesystem import read_regular
    from .loader import MAX_SPEC_BYTES
    from .yaml_tree import offset_loc

    # never open() it: a FIFO named *.yaml froze `check` and serve's reload waiting for a
    # writer, and a huge file would be read whole; the loader then says why it is refused
    raw = read_regular(path, MAX_SPEC_BYTES)
    if isinstance(raw, str):
        return None
    text = raw.decode("utf-8", errors="replace")
    for count, match in enumerate(_A_NUMBER.finditer(text), 1):
        if count > MAX_FILE_NUMBERS:
            return SpecError(str(path), *offset_loc(text, match.start()),
                             message=f"the file lists more than {MAX_FILE_NUMBERS} phone numbers; at most "
                                     f"{MAX_NUMBERS} per trunk or rule and {MAX_FILE_NUMBERS} per file (split the "
                                     "lines over several files)")
    return None


def _item_problems(kind: str, name: str, item: Any, walker: Walker,
                   numbers: dict[tuple[str, str], tuple[str, Walker, KeyPath]]) -> list[SpecError]:
    """A number on two inbound trunks, or taken by two dispatch rules: LiveKit could
    not tell which one a call is for."""
    if kind == "outbound_trunks":
        return []
    out: list[SpecError] = []
    what = "inbound trunk" if kind == "inbound_trunks" else "dispatch rule"
    for i, number in enumerate(item.numbers):
        where: KeyPath = (kind, name, "numbers", i)
        held = numbers.get((kind, number))
        if held is not None and held[0] != name:
            out.append(walker.error(where, f"{number} is also taken by {what} {held[0]!r} ({held[1].file}); "
                                           f"one {what} per number", value=True))
        else:
            numbers[(kind, number)] = (name, walker, where)
    return out


def _literal_passwords(doc: TelephonyFile, walker: Walker) -> list[SpecError]:
    out = []
    for kind, items in (("inbound_trunks", doc.inbound_trunks), ("outbound_trunks", doc.outbound_trunks)):
        for name, trunk in items.items():
            where: KeyPath = (kind, name, "auth", "password")
            if trunk.auth is None:
                continue
            if where not in walker.expanded:
                # a message never quotes the value: it is a password written in a file
                out.append(walker.error(where, "write the password as a ${VAR} read from the environment "
                                               "(such as ${SIP_PASSWORD}), not as text in the file", value=True))
            elif defaulted := defaulted_vars(walker.expanded[where][1]):
                # the default is used whenever the variable is unset: a password in git, live
                out.append(walker.error(where, f"a password takes no default: write ${{{defaulted[0]}}} (not "
                                               f"${{{defaulted[0]}:-...}}) and set {defaulted[0]} in the "
                                               "environment", value=True))
    return out


def _references(lines: Lines, owners: dict[tuple[str, str], tuple[Walker, KeyPath]],
                agents: typing.Collection[str]) -> list[SpecError]:
    out: list[SpecError] = []
    trunk_rules: dict[str, str] = {}
    held = {number: trunk for trunk, item in lines.inbound.items() for number in item.numbers}
    for name, rule in lines.rules.items():
        walker, where = owners[("dispatch_rules", name)]
        for i, number in enumerate(rule.numbers):
            # LiveKit takes a call only on a number of an inbound trunk: a rule for any other
            # number never starts its agent (a typo in a number, most often)
            if number not in held:
                out.append(walker.error((*where, "numbers", i), f"{number} is on no inbound trunk: no call to it "
                                        "reaches LiveKit (add it to an inbound trunk's numbers)", value=True))
            elif rule.trunks and held[number] not in rule.trunks:
                out.append(walker.error((*where, "numbers", i), f"{number} is on inbound trunk {held[number]!r}, "
                                        f"not on the rule's trunks ({', '.join(rule.trunks)})", value=True))
        if rule.agent not in agents:
            known = ", ".join(sorted(agents)) or "none"
            out.append(walker.error((*where, "agent"), f"no valid agent named {rule.agent!r} in the specs folder; "
                                                       f"available: {known}", value=True))
        for i, trunk in enumerate(rule.trunks):
            if trunk not in lines.inbound:
                known = ", ".join(sorted(lines.inbound)) or "none"
                out.append(walker.error((*where, "trunks", i), f"no inbound trunk named {trunk!r}; declared: {known}",
                                        value=True))
            elif not rule.numbers:  # a trunk-wide rule: one per trunk
                if trunk in trunk_rules:
                    out.append(walker.error((*where, "trunks", i), f"inbound trunk {trunk!r} already has the "
                                            f"trunk-wide dispatch rule {trunk_rules[trunk]!r}; one per trunk",
                                            value=True))
                trunk_rules.setdefault(trunk, name)
    return out
