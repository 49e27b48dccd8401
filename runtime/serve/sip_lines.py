"""The phone lines of the files applied to LiveKit like Terraform: read what LiveKit
holds, compute the whole plan (``make_plan``), refuse it before any change when it
cannot work (a number held by an object we do not own), then apply it in an order
that never leaves two objects fighting for a number (``apply_plan``).

Ours are the objects whose metadata says so: ``{"managed_by": "voice-runtime",
"owner": OWNER, "kind": ..., "name": ...}``; nothing else is ever updated or deleted.
The metadata also holds ``digest``: an HMAC (keyed by the LiveKit API secret) of the
whole object as the files want it, password included. A password changed in the
environment is then an update, though LiveKit may not return passwords and the plan
never shows one; reading the digest tells nothing without the API secret, which
already gives access to the trunks themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..spec.telephony import Lines

MANAGED_BY = "voice-runtime"
INBOUND, OUTBOUND, RULE = "inbound trunk", "outbound trunk", "dispatch rule"
# deletions first (they free numbers), then trunks before the rules that name them
_ORDER = {("delete", RULE): 0, ("delete", INBOUND): 1, ("delete", OUTBOUND): 1, ("update", INBOUND): 2,
          ("update", OUTBOUND): 2, ("create", INBOUND): 3, ("create", OUTBOUND): 3, ("update", RULE): 4,
          ("create", RULE): 5}
_SHOWN = {  # the fields a plan compares and shows; a password only through the digest
    INBOUND: ("numbers", "allowed_addresses", "allowed_numbers", "auth_username"),
    OUTBOUND: ("address", "transport", "numbers", "auth_username"),
    RULE: ("numbers", "trunks", "agent", "room_prefix"),
}


@dataclass
class Change:
    action: str  # create, update, delete, no-op
    kind: str  # INBOUND, OUTBOUND, RULE
    name: str
    object_id: str = ""  # LiveKit's id (empty until created)
    details: list[str] = field(default_factory=list)  # "numbers: [a] -> [b]"; a password only as "changed"
    desired: dict[str, Any] | None = None  # the object's fields as the files want them (secrets included)

    def line(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-", "no-op": "="}[self.action]
        where = f" ({self.object_id})" if self.object_id else ""
        head = f"{sign} {self.action} {self.kind} {self.name}{where}"
        return "\n".join([head, *(f"    {d}" for d in self.details)])


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # why the plan cannot be applied; nothing is changed
    foreign: int = 0  # objects LiveKit holds that are not ours (left alone)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self._in_apply_order() if c.action != "no-op"]

    def _in_apply_order(self) -> list[Change]:
        # an unchanged object sits where its update would: trunks before the rules naming them
        return sorted(self.changes, key=lambda c: (_ORDER[("update" if c.action == "no-op" else c.action, c.kind)], c.name))

    def render(self) -> str:
        # in the order apply makes the changes: deletions, then trunks, then the rules naming them
        lines = [c.line() for c in self._in_apply_order()]
        lines += [f"conflict: {c}" for c in self.conflicts]
        counts = {a: sum(1 for c in self.changes if c.action == a) for a in ("create", "update", "delete", "no-op")}
        lines.append(f"plan: {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete, "
                     f"{counts['no-op']} unchanged; {self.foreign} object(s) not managed by voice-runtime left alone")
        return "\n".join(lines)


@dataclass
class Applied:
    done: list[Change] = field(default_factory=list)
    failed: Change | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.failed is None


# -- the plan ----------------------------------------------------------------------

def desired_objects(lines: Lines) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the fields the files want (the password under ``auth_password``)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name, trunk in lines.inbound.items():
        out[(INBOUND, name)] = {"numbers": list(trunk.numbers), "allowed_addresses": list(trunk.allowed_addresses),
                                "allowed_numbers": list(trunk.allowed_numbers), **_auth(trunk.auth)}
    for name, out_trunk in lines.outbound.items():
        out[(OUTBOUND, name)] = {"address": out_trunk.address, "transport": out_trunk.transport,
                                 "numbers": list(out_trunk.numbers), **_auth(out_trunk.auth)}
    for name, rule in lines.rules.items():
        out[(RULE, name)] = {"numbers": list(rule.numbers), "trunks": list(rule.trunks), "agent": rule.agent,
                             "room_prefix": rule.room_prefix}
    return out


def _auth(auth: Any) -> dict[str, str]:
    return {"auth_username": auth.username, "auth_password": auth.password} if auth else \
        {"auth_username": "", "auth_password": ""}


def digest(fields: dict[str, Any], key: str) -> str:
    return hmac.new(key.encode(), json.dumps(fields, sort_keys=True).encode(), hashlib.sha256).hexdigest()[:32]


def ownership(metadata: str) -> dict[str, Any] | None:
    """Our marker in an object's metadata, or None (someone else's object)."""
    try:
        data = json.loads(metadata or "null")
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("managed_by") == MANAGED_BY else None


@dataclass
class Remote:
    """What LiveKit holds, as lists of its protobuf objects."""

    inbound: list[Any]
    outbound: list[Any]
    rules: list[Any]


async def read_remote(sip: Any) -> Remote:
    from livekit import api

    inbound = await sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    outbound = await sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
    rules = await sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
    return Remote(list(inbound.items), list(outbound.items), list(rules.items))


def _remote_fields(kind: str, info: Any, trunk_names: dict[str, str]) -> dict[str, Any]:
    from livekit.protocol import sip

    if kind == INBOUND:
        return {"numbers": list(info.numbers), "allowed_addresses": list(info.allowed_addresses),
                "allowed_numbers": list(info.allowed_numbers), "auth_username": info.auth_username}
    if kind == OUTBOUND:
        transport = sip.SIPTransport.Name(info.transport).removeprefix("SIP_TRANSPORT_").lower()
        return {"address": info.address, "transport": transport, "numbers": list(info.numbers),
                "auth_username": info.auth_username}
    agents = list(info.room_config.agents)
    return {"numbers": list(info.numbers), "trunks": [trunk_names.get(t, t) for t in info.trunk_ids],
            "agent": agents[0].agent_name if agents else "",
            "room_prefix": info.rule.dispatch_rule_individual.room_prefix}


def make_plan(lines: Lines, remote: Remote, key: str, owner: str = "default") -> Plan:
    """Every change the files ask for, and every conflict that forbids applying them."""
    plan = Plan()
    wanted = desired_objects(lines)
    ours: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}
    extra: list[tuple[str, str, Any]] = []
    trunk_names: dict[str, str] = {}
    for kind, items, id_field in ((INBOUND, remote.inbound, "sip_trunk_id"), (OUTBOUND, remote.outbound, "sip_trunk_id"),
                                  (RULE, remote.rules, "sip_dispatch_rule_id")):
        for info in items:
            mark = ownership(info.metadata)
            if mark is None or mark.get("owner") != owner or mark.get("kind") != kind:
                plan.foreign += 1
                _foreign_conflicts(plan, kind, info, wanted)
                continue
            name = str(mark.get("name", ""))
            if kind == INBOUND:
                trunk_names[info.sip_trunk_id] = name
            if (kind, name) in ours:  # two of ours under one name (a half-finished apply elsewhere): one goes
                extra.append((kind, name, getattr(info, id_field)))
                continue
            ours[(kind, name)] = (info, mark)
    for (kind, name), fields in wanted.items():
        sealed = digest(fields, key)
        if (kind, name) not in ours:
            plan.changes.append(Change("create", kind, name, details=_shown(kind, {}, fields, True), desired=fields))
            continue
        info, mark = ours[(kind, name)]
        object_id = info.sip_dispatch_rule_id if kind == RULE else info.sip_trunk_id
        now = _remote_fields(kind, info, trunk_names)
        details = _shown(kind, now, fields, False)
        if mark.get("digest") != sealed and not details:
            details = ["auth_password: changed" if fields.get("auth_password") else "metadata: changed"]
        plan.changes.append(Change("update" if details else "no-op", kind, name, object_id, details, fields))
    for (kind, name), (info, _) in ours.items():
        if (kind, name) not in wanted:
            object_id = info.sip_dispatch_rule_id if kind == RULE else info.sip_trunk_id
            plan.changes.append(Change("delete", kind, name, object_id))
    plan.changes += [Change("delete", kind, name, object_id, ["a second object of ours under this name"])
                     for kind, name, object_id in extra]
    return plan


def _shown(kind: str, now: dict[str, Any], fields: dict[str, Any], new: bool) -> list[str]:
    out = []
    for key in _SHOWN[kind]:
        if new:
            if fields.get(key):
                out.append(f"{key}: {_value(fields[key])}")
        elif now.get(key) != fields.get(key):
            out.append(f"{key}: {_value(now.get(key))} -> {_value(fields.get(key))}")
    if new and fields.get("auth_password"):
        out.append("auth_password: (set, not shown)")
    return out


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else (value or '""')


def _foreign_conflicts(plan: Plan, kind: str, info: Any, wanted: dict[tuple[str, str], dict[str, Any]]) -> None:
    """A number an object we do not own already takes: LiveKit would refuse ours, or
    send the calls to the wrong place."""
    if kind == OUTBOUND:
        return  # several outbound trunks may dial from one number
    taken = set(info.numbers)
    label = info.name or (info.sip_dispatch_rule_id if kind == RULE else info.sip_trunk_id)
    object_id = info.sip_dispatch_rule_id if kind == RULE else info.sip_trunk_id
    for (want_kind, name), fields in sorted(wanted.items()):
        if want_kind == kind:
            for number in sorted(taken & set(fields["numbers"])):
                plan.conflicts.append(f"{kind} {name}: {number} is already taken by {kind} {label!r} ({object_id}), "
                                      "which voice-runtime does not manage; remove the number there or here")


# -- applying it ----------------------------------------------------------------------

def _metadata(change: Change, key: str, owner: str) -> str:
    assert change.desired is not None
    return json.dumps({"managed_by": MANAGED_BY, "owner": owner, "kind": change.kind, "name": change.name,
                       "digest": digest(change.desired, key)}, sort_keys=True)


def _message(change: Change, key: str, owner: str, trunk_ids: dict[str, str]) -> Any:
    from livekit import api
    from livekit.protocol import sip

    fields, meta = change.desired or {}, _metadata(change, key, owner)
    if change.kind == INBOUND:
        return sip.SIPInboundTrunkInfo(name=change.name, metadata=meta, numbers=fields["numbers"],
                                       allowed_addresses=fields["allowed_addresses"],
                                       allowed_numbers=fields["allowed_numbers"], auth_username=fields["auth_username"],
                                       auth_password=fields["auth_password"])
    if change.kind == OUTBOUND:
        return sip.SIPOutboundTrunkInfo(name=change.name, metadata=meta, address=fields["address"],
                                        transport=sip.SIPTransport.Value("SIP_TRANSPORT_" + fields["transport"].upper()),
                                        numbers=fields["numbers"], auth_username=fields["auth_username"],
                                        auth_password=fields["auth_password"])
    # the agent is dispatched by its own name (serve --dispatch name) and named in the
    # dispatch metadata too (serve --dispatch metadata routes by it)
    agent = api.RoomAgentDispatch(agent_name=fields["agent"], metadata=json.dumps({"agent": fields["agent"]}))
    return sip.SIPDispatchRuleInfo(
        name=change.name, metadata=meta, numbers=fields["numbers"],
        trunk_ids=[trunk_ids[t] for t in fields["trunks"]],
        rule=sip.SIPDispatchRule(dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix=fields["room_prefix"])),
        room_config=api.RoomConfiguration(agents=[agent]))


async def apply_plan(plan: Plan, sip: Any, remote: Remote, key: str, owner: str = "default") -> Applied:
    """Every pending change, in order; the first failure stops it (what was done is in
    the result). A plan with conflicts is never started."""
    from livekit import api

    applied = Applied()
    if plan.conflicts:
        applied.error = "the plan has conflicts; nothing was changed"
        return applied
    # the ids of our inbound trunks by name: rules name trunks, LiveKit wants ids
    trunk_ids = {str((ownership(t.metadata) or {}).get("name")): t.sip_trunk_id for t in remote.inbound
                 if (ownership(t.metadata) or {}).get("owner") == owner}
    for change in plan.pending:
        try:
            if change.action == "delete":
                if change.kind == RULE:
                    await sip.delete_dispatch_rule(api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=change.object_id))
                else:
                    await sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=change.object_id))
            else:
                message = _message(change, key, owner, trunk_ids)
                if change.action == "create":
                    created = await _create(sip, change.kind, message)
                    change.object_id = created.sip_dispatch_rule_id if change.kind == RULE else created.sip_trunk_id
                else:
                    await _update(sip, change.kind, change.object_id, message)
                if change.kind == INBOUND:
                    trunk_ids[change.name] = change.object_id
        except Exception as exc:  # noqa: BLE001 - a refusal or a lost connection: stop and say what was done
            applied.failed = change
            applied.error = remote_error(exc)
            return applied
        applied.done.append(change)
    return applied


async def _create(sip: Any, kind: str, message: Any) -> Any:
    from livekit import api

    if kind == INBOUND:
        return await sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=message))
    if kind == OUTBOUND:
        return await sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=message))
    return await sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=message))


async def _update(sip: Any, kind: str, object_id: str, message: Any) -> Any:
    if kind == INBOUND:
        return await sip.update_inbound_trunk(object_id, message)
    if kind == OUTBOUND:
        return await sip.update_outbound_trunk(object_id, message)
    return await sip.update_dispatch_rule(object_id, message)


def render_applied(applied: Applied) -> str:
    lines = [f"applied: {c.action} {c.kind} {c.name}" + (f" ({c.object_id})" if c.object_id else "") for c in applied.done]
    if applied.failed is not None:
        c = applied.failed
        lines.append(f"error: {c.action} {c.kind} {c.name} failed: {applied.error}")
        lines.append(f"stopped after {len(applied.done)} change(s); the rest was not applied (run `sip plan` to see it)")
    elif applied.error:
        lines.append(f"error: {applied.error}")
    else:
        lines.append(f"apply complete: {len(applied.done)} change(s)")
    return "\n".join(lines)


# long enough for an apply or a call's ring; the SDK's own tokens live 6 hours
TOKEN_TTL = timedelta(minutes=15)


def livekit_api(url: str, api_key: str, api_secret: str, *, room: str | None = None) -> Any:
    """A LiveKit API client with one token minted here, with only the grants these calls
    need (SIP admin; with ``room``, that room and dialling into it). The token joins the
    redaction set as issued OAuth tokens do: a server echoing the Authorization header
    in an error puts it in no output or log line. (Left to the SDK, each request signs
    a fresh 6-hour token we never see.)"""
    from livekit import api

    from ..mcp.oauth import note_issued

    token = api.AccessToken(api_key, api_secret).with_ttl(TOKEN_TTL) \
        .with_sip_grants(api.SIPGrants(admin=True, call=room is not None))
    if room is not None:
        token = token.with_grants(api.VideoGrants(room_admin=True, room=room, room_create=True))
    jwt = token.to_jwt()
    note_issued(jwt, label="[livekit token]")
    return api.LiveKitAPI(url, token=jwt)


def remote_error(exc: BaseException) -> str:
    """A LiveKit API failure as one line: its type and message, any bearer token or JWT
    in it masked (a token from elsewhere, or one not yet registered, included)."""
    from ..spec.secrets import mask_tokens

    text = mask_tokens(str(getattr(exc, "message", "") or exc))
    # not cut short: a cut could split a secret the output's redaction would then miss
    return f"{type(exc).__name__}: " + text.replace("\r", "\\r").replace("\n", "\\n")


async def plan_and_apply(lines: Lines, url: str, api_key: str, api_secret: str, *, apply: bool,
                         owner: str = "default") -> tuple[Plan, Applied | None]:
    """One connection: read LiveKit, plan, and (``apply``) apply."""
    async with livekit_api(url, api_key, api_secret) as lk:
        remote = await read_remote(lk.sip)
        plan = make_plan(lines, remote, api_secret, owner)
        if not apply:
            return plan, None
        return plan, await apply_plan(plan, lk.sip, remote, api_secret, owner)
