"""Field rules (`rules:` in the config): redact, drop or set fields, drop or rename events.

The rules are an ordered list. Each has exactly one action and may be scoped:

```yaml
rules:
  - redact_url_params: [email, token]      # from event_source_url and referrer
  - drop_events: {user_agent_matches: "(?i)bot", ip_in: [10.0.0.0/8], event_names: [x]}
  - drop_fields: [user.phone, custom.coupon]
  - set: {custom.content_type: product, action_source: website}
  - rename_event: {from: generate_lead, to: lead}
  - destination: tiktok                    # only for this destination
    events: [purchase]                     # only for events of these names
    drop_fields: [user.email]
```

- `drop_events` drops an event when *all* the conditions it gives hold (AND); for "any of
  these", write one rule each. An event without a user agent never matches
  `user_agent_matches` (a regex, `re.search`), one without an IP never matches `ip_in`.
- `events:` is matched against the event's name at that point of the list, so a rule after a
  `rename_event` sees the new name.
- `rename_event` renames one name; write one rule per name.

The pipeline calls `apply_rules` once per destination (a rule without `destination:` applies
to all). `split_shared` gives the leading rules that do not depend on the destination, so those
can run once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Final

from pydantic import Field, StringConstraints, ValidationError

from gateway.client_ip import IPNetwork, parse_networks
from gateway.event import Event
from gateway.problems import describe
from gateway.rules.field_paths import FieldPath, PathError, assign, coerce, drop, parse_path
from gateway.rules.url_params import redact_params
from gateway.settings import StrictModel

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ACTIONS: Final = ("redact_url_params", "drop_fields", "drop_events", "set", "rename_event")

# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedactUrlParams:
    """Remove these query parameters (lower case) from `event_source_url` and `referrer`."""

    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class DropFields:
    """Clear these fields."""

    paths: tuple[FieldPath, ...]


@dataclass(frozen=True, slots=True)
class DropEvents:
    """Drop the event when every condition given holds (None: not a condition)."""

    user_agent: re.Pattern[str] | None = None
    networks: tuple[IPNetwork, ...] | None = None
    event_names: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class SetFields:
    """Set these fields to these constants (already of the field's type)."""

    values: tuple[tuple[FieldPath, Any], ...]


@dataclass(frozen=True, slots=True)
class RenameEvent:
    """Rename events called `old` to `new`."""

    old: str
    new: str


Action = RedactUrlParams | DropFields | DropEvents | SetFields | RenameEvent


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of `rules:`: its position in the list, its scope and its action."""

    index: int
    action: Action
    destination: str | None = None
    events: frozenset[str] | None = None

    def applies(self, event_name: str, destination: str | None) -> bool:
        """True when the scope admits this event name and destination."""
        if self.destination is not None and self.destination != destination:
            return False
        return self.events is None or event_name in self.events


@dataclass(frozen=True, slots=True)
class Dropped:
    """A rule dropped the event; `reason` says which rule and why (no personal data)."""

    rule_index: int
    reason: str


# --- parsing ---------------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(min_length=1)]
Names = Annotated[tuple[Name, ...], Field(min_length=1)]


class _DropEventsModel(StrictModel):
    user_agent_matches: Name | None = None
    ip_in: Names | None = None
    event_names: Names | None = None


class _RenameModel(StrictModel):
    from_: Name = Field(alias="from")
    to: Name


class _RuleModel(StrictModel):
    destination: Name | None = None
    events: Names | None = None
    redact_url_params: Names | None = None
    drop_fields: Names | None = None
    drop_events: _DropEventsModel | None = None
    set_: dict[str, Any] | None = Field(default=None, alias="set")
    rename_event: _RenameModel | None = None


def parse_rules(
    raw: Sequence[Mapping[str, Any]], destinations: Collection[str]
) -> tuple[tuple[Rule, ...], list[str]]:
    """Typed rules, and one line per problem as `rules[<i>].<key path>: <message>`."""
    rules: list[Rule] = []
    problems: list[str] = []
    for index, entry in enumerate(raw):
        path = f"rules[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{path}: must be a mapping")
            continue
        try:
            model = _RuleModel.model_validate(dict(entry))
        except ValidationError as exc:
            problems.extend(describe(exc, path, _MESSAGES))
            continue
        rule = _rule(index, model, destinations, path, problems)
        if rule is not None:
            rules.append(rule)
    return tuple(rules), problems


def _rule(
    index: int,
    model: _RuleModel,
    destinations: Collection[str],
    path: str,
    problems: list[str],
) -> Rule | None:
    before = len(problems)
    if model.destination is not None and model.destination not in destinations:
        problems.append(f"{path}.destination: unknown destination '{model.destination}'")
    given = [name for name in ACTIONS if getattr(model, _attr(name)) is not None]
    if not given:
        problems.append(f"{path}: needs one action ({', '.join(ACTIONS)})")
        return None
    if len(given) > 1:
        problems.append(f"{path}: more than one action ({', '.join(given)}); write one rule each")
        return None
    action = _action(model, f"{path}.{given[0]}", problems)
    if action is None or len(problems) > before:
        return None
    return Rule(
        index=index,
        action=action,
        destination=model.destination,
        events=frozenset(model.events) if model.events is not None else None,
    )


def _attr(key: str) -> str:
    return "set_" if key == "set" else key


def _action(model: _RuleModel, path: str, problems: list[str]) -> Action | None:
    if model.redact_url_params is not None:
        return RedactUrlParams(frozenset(name.lower() for name in model.redact_url_params))
    if model.drop_fields is not None:
        paths = []
        for i, text in enumerate(model.drop_fields):
            try:
                paths.append(parse_path(text, setting=False))
            except PathError as exc:
                problems.append(f"{path}[{i}]: {exc}")
        return DropFields(tuple(paths))
    if model.drop_events is not None:
        return _drop_events(model.drop_events, path, problems)
    if model.set_ is not None:
        return _set_fields(model.set_, path, problems)
    if model.rename_event is not None:
        rename = model.rename_event
        if rename.from_ == rename.to:
            problems.append(f"{path}.to: the same name as from")
        return RenameEvent(rename.from_, rename.to)
    return None  # pragma: no cover - _rule checked that one action is given


def _drop_events(model: _DropEventsModel, path: str, problems: list[str]) -> DropEvents | None:
    if model.user_agent_matches is None and model.ip_in is None and model.event_names is None:
        problems.append(f"{path}: needs at least one of user_agent_matches, ip_in, event_names")
        return None
    pattern = None
    if model.user_agent_matches is not None:
        try:
            pattern = re.compile(model.user_agent_matches)
        except re.error as exc:
            problems.append(f"{path}.user_agent_matches: invalid regex: {exc}")
    networks = None
    if model.ip_in is not None:
        networks = parse_networks(model.ip_in, f"{path}.ip_in", problems)
    names = frozenset(model.event_names) if model.event_names is not None else None
    return DropEvents(pattern, networks, names)


def _set_fields(raw: Mapping[str, Any], path: str, problems: list[str]) -> SetFields:
    if not raw:
        problems.append(f"{path}: must not be empty")
    values = []
    for key, value in raw.items():
        try:
            field_path = parse_path(key, setting=True)
            values.append((field_path, coerce(field_path, value)))
        except PathError as exc:
            problems.append(f"{path}.{key}: {exc}")
    return SetFields(tuple(values))


# Where a rule's wording differs from the rest of the config's (`problems.PLAIN`): every list
# and text of a rule has a minimum of one, so "must not be empty" says all there is to say.
_MESSAGES: Final = {
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
}


# --- applying --------------------------------------------------------------------------------


def apply_rules(event: Event, rules: Sequence[Rule], destination: str | None) -> Event | Dropped:
    """The event as `destination` gets it after the rules, in order, or Dropped.

    With `destination=None` only the rules without a `destination:` apply. Never changes
    `event`; returns it unchanged when no rule changed anything.
    """
    for rule in rules:
        if not rule.applies(event.event_name, destination):
            continue
        action = rule.action
        if isinstance(action, DropEvents):
            reason = _drop_reason(event, action)
            if reason is not None:
                return Dropped(rule.index, f"rules[{rule.index}].drop_events: {reason}")
        elif isinstance(action, RedactUrlParams):
            event = _redact(event, action.names)
        elif isinstance(action, DropFields):
            for field_path in action.paths:
                event = drop(event, field_path)
        elif isinstance(action, SetFields):
            for field_path, value in action.values:
                event = assign(event, field_path, value)
        elif event.event_name == action.old:
            event = replace(event, event_name=action.new)
    return event


def split_shared(rules: Sequence[Rule]) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """The leading rules without `destination:` (run once) and the rest (run per destination).

    Only a prefix can be shared: a scoped rule earlier in the list may rename or change the
    event that later, unscoped rules look at.
    """
    for position, rule in enumerate(rules):
        if rule.destination is not None:
            return tuple(rules[:position]), tuple(rules[position:])
    return tuple(rules), ()


def _redact(event: Event, names: frozenset[str]) -> Event:
    url = event.event_source_url and redact_params(event.event_source_url, names)
    referrer = event.referrer and redact_params(event.referrer, names)
    if url == event.event_source_url and referrer == event.referrer:
        return event
    # A URL that was nothing but the redacted parameters is no URL at all.
    return replace(event, event_source_url=url or None, referrer=referrer or None)


def _drop_reason(event: Event, action: DropEvents) -> str | None:
    """Why the event is dropped (every condition holds), else None."""
    reasons = []
    if action.event_names is not None:
        if event.event_name not in action.event_names:
            return None
        reasons.append(f"event_names has '{event.event_name}'")
    if action.user_agent is not None:
        agent = event.user.user_agent
        if not agent or action.user_agent.search(agent) is None:
            return None
        reasons.append(f"user_agent_matches '{action.user_agent.pattern}'")
    if action.networks is not None:
        address = _address(event.user.client_ip)
        network = next((n for n in action.networks if _within(address, n)), None)
        if network is None:
            return None
        reasons.append(f"ip_in {network}")
    return "; ".join(reasons)


def _address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    # Parsed per call, not cached: a cache would keep client IPs in memory after delivery.
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # `::ffff:203.0.113.7` is an IPv4 client behind a dual-stack socket.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: IPAddress | None, network: IPNetwork) -> bool:
    return address is not None and address.version == network.version and address in network
