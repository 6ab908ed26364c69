"""Loading a config: YAML, `${ENV}` substitution, validation into typed immutable settings.

Every problem is reported with its YAML key path (`destinations.meta.pixel_id: required`), all of
them at once, and never with a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError

from gateway import destinations, names, sources
from gateway.client_ip import IPNetwork, parse_networks
from gateway.problems import describe, join
from gateway.rules.field_rules import Rule, parse_rules
from gateway.scripts import Script
from gateway.settings import DestinationSettings, Secret, SourceSettings, StrictModel

ENV_VAR: Final = "TAG_GATEWAY_CONFIG"
EMBEDDED: Final = "embedded default"
_PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# `api_keys: [${KEY}]` (the contract's own example) is not valid YAML as written: `{` opens a
# flow mapping inside the list. So before parsing, each ${NAME} becomes a plain-scalar token,
# and after parsing the token is replaced in the strings it ended up in. Values never pass
# through the YAML parser, so a secret with `: ` or `#` in it cannot change the structure.
_TOKEN: Final = re.compile(r"tgenv__([A-Za-z_][A-Za-z0-9_]*)__tgend")

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config that cannot run; `problems` has one line per problem, each naming its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class OpsListen(StrictModel):
    """A listener for operators (docs/http.md §3): /readyz in detail, /metrics, /admin."""

    host: str | None = None
    """None: the same address as the public listener."""
    port: int = Field(ge=1, le=65535)


class Listen(StrictModel):
    """Where `serve` listens."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    ops: OpsListen | None = None
    """None: the operator's routes are on the public listener, as they always were."""
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """A new connection must have sent its first request's headers within this."""
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A request's body must have arrived within this once its headers did."""
    keepalive_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    """An idle kept-alive connection is closed after this (and a next request slower than it)."""
    max_connections: int = Field(default=900, ge=1, le=1_000_000)
    """Open client connections at most; past it, the oldest one that has not yet sent its
    headers makes room, else the new one is closed. Keep it under the descriptor limit
    (`ulimit -n`, often 1,024): storage and the platforms' connections need some too."""


class OutageBuffer(StrictModel):
    """Browser hits held in memory while storage refuses writes (docs/operations.md §1)."""

    max_events: int = Field(default=20_000, ge=0, le=1_000_000)
    max_bytes: int = Field(default=96 * 1_048_576, ge=0, le=1024 * 1_048_576)


class Storage(StrictModel):
    """The SQLite file of the outbox and the delivery log."""

    path: str = "./tag-gateway.sqlite3"
    url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    """PostgreSQL instead of the SQLite file, for several replicas sharing one truth."""
    # At least 2: deduplication looks back 48 hours through the delivery log.
    retention_days: int = Field(default=30, ge=2, le=3650)
    synchronous: Literal["full", "normal"] = "full"
    """`full`: an acknowledged event survives a process crash and a power cut. `normal`:
    it survives a process crash (kill -9) but the last moments before a power cut may be
    lost; about 1.6x the hit throughput (README, Performance)."""
    outage_buffer: OutageBuffer = OutageBuffer()


class Cookies(StrictModel):
    """First-party cookies refreshed on pixel answers."""

    domain: str
    max_age_days: int = Field(default=90, ge=1, le=400)


class ConsentSettings(StrictModel):
    """How consent is decided when a hit carries no signal, and whether GPC is honoured."""

    default: Literal["granted", "denied"] = "granted"
    honor_gpc: bool = True
    tcf: bool = False
    """Read IAB TCF strings (`gdpr=1&gdpr_consent=...` on hits, or `tcf_cookie`)."""
    tcf_cookie: str | None = None
    """A first-party cookie holding the CMP's TC string (for example `euconsent-v2`)."""


class Admin(StrictModel):
    """`GET /admin`, enabled only with a token."""

    token: Secret


class _Document(StrictModel):
    """The top level but for destinations and sources, which their own modules' models check."""

    listen: Listen = Listen()
    trusted_proxies: tuple[str, ...] = ()
    storage: Storage = Storage()
    cookies: Cookies | None = None
    scripts: tuple[Script, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    admin: Admin | None = None
    consent: ConsentSettings = ConsentSettings()


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config: what the rest of the gateway reads."""

    listen: Listen
    trusted_proxies: tuple[IPNetwork, ...]
    storage: Storage
    destinations: Mapping[str, DestinationSettings]
    sources: Mapping[str, SourceSettings]
    cookies: Cookies | None
    scripts: tuple[Script, ...]
    allowed_origins: tuple[str, ...]
    admin: Admin | None
    consent: ConsentSettings
    rules: tuple[Rule, ...]
    origin: str = EMBEDDED
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Every secret value, so log output can be checked against them."""


# --- loading ---------------------------------------------------------------------------------


def locate(path: str | None) -> str | None:
    """`--config FILE`, else `$TAG_GATEWAY_CONFIG`, else None for the embedded default."""
    return path or os.environ.get(ENV_VAR) or None


def embedded_text() -> str:
    """The embedded default config (`gateway/default.yaml`)."""
    return resources.files("gateway").joinpath("default.yaml").read_text("utf-8")


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config `path` (or the located one); raise ConfigError listing every problem."""
    located = locate(path)
    if located is None:
        return parse(embedded_text(), EMBEDDED, env)
    try:
        text = Path(located).read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"{located}: cannot read ({exc.strerror})"]) from exc
    return parse(text, located, env)


def parse(text: str, origin: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML text into a Config."""
    try:
        document = yaml.safe_load(_PLACEHOLDER.sub(r"tgenv__\1__tgend", text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError([f"{origin}: not valid YAML{where}"]) from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([f"{origin}: the top level must be a mapping"])
    problems: list[str] = []
    document = _substitute(document, os.environ if env is None else env, "", problems)
    # Destinations and sources are validated apart, so one bad key elsewhere hides nothing.
    rules_raw = _rule_list(document.pop("rules", None), problems)
    dests_raw = _mapping(document.pop("destinations", None), "destinations", problems)
    dests = _destinations(dests_raw, problems)
    srcs = _sources(_mapping(document.pop("sources", None), "sources", problems), problems)
    raw = _validate(_Document, document, "", problems)
    proxies = parse_networks(raw.trusted_proxies if raw else (), "trusted_proxies", problems)
    _cross_check(dests_raw.keys(), srcs, problems)
    rules, rule_problems = parse_rules(rules_raw, dests_raw.keys())
    problems.extend(rule_problems)
    if problems or raw is None:
        raise ConfigError(problems)
    secrets = [s.get_secret_value() for d in dests.values() for s in d.secrets()]
    secrets += [s.get_secret_value() for src in srcs.values() for s in _source_secrets(src)]
    if raw.admin:
        secrets.append(raw.admin.token.get_secret_value())
    if raw.storage.url:
        secrets.append(urlsplit(raw.storage.url).password or "")
    return Config(
        listen=raw.listen,
        trusted_proxies=proxies,
        storage=raw.storage,
        destinations=dests,
        sources=srcs,
        cookies=raw.cookies,
        scripts=raw.scripts,
        allowed_origins=raw.allowed_origins,
        admin=raw.admin,
        consent=raw.consent,
        rules=rules,
        origin=origin,
        secrets=tuple(s for s in secrets if s),
    )


def _substitute(node: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                problems.append(f"{path or '<top>'}: environment variable {name} is not set")
                return ""
            return env[name]

        return _TOKEN.sub(replace, node)
    if isinstance(node, dict):
        return {k: _substitute(v, env, join(path, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    return node


def _rule_list(node: object, problems: list[str]) -> list[dict[str, Any]]:
    if node is None:
        return []
    if not isinstance(node, list):
        problems.append("rules: must be a list")
        return []
    out = []
    for i, rule in enumerate(node):
        if isinstance(rule, dict):
            out.append(rule)
        else:
            problems.append(f"rules[{i}]: must be a mapping")
    return out


def _mapping(node: object, path: str, problems: list[str]) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        problems.append(f"{path}: must be a mapping")
        return {}
    return {str(k): v for k, v in node.items()}


def _validate(model: type[M], data: object, path: str, problems: list[str]) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(describe(exc, path))
        return None


def _destinations(raw: dict[str, Any], problems: list[str]) -> dict[str, DestinationSettings]:
    out: dict[str, DestinationSettings] = {}
    for name, body in raw.items():
        path = f"destinations.{name}"
        if not isinstance(body, dict):
            problems.append(f"{path}: must be a mapping")
            continue
        kind = body.get("type")
        if kind is None:
            problems.append(f"{path}.type: required")
            continue
        cls = destinations.TYPES.get(str(kind))
        if cls is None:
            known = ", ".join(sorted(destinations.TYPES))
            problems.append(f"{path}.type: unknown type '{kind}' (known: {known})")
            continue
        settings = _validate(cls.settings_model, body, path, problems)
        if settings is None:
            continue
        wanted = settings.batch.max_events
        if wanted is not None and wanted > cls.max_batch:
            # Silently capped, it would hide that the platform refuses more in one request.
            problems.append(f"{path}.batch.max_events: at most {cls.max_batch} (the {kind} limit)")
            continue
        for i, event_name in enumerate(settings.events or ()):
            if (why := names.never_matches(event_name)) is not None:
                problems.append(f"{path}.events[{i}]: {event_name[:60]!r} never matches: {why}")
        out[name] = settings
    return out


def _sources(raw: dict[str, Any], problems: list[str]) -> dict[str, SourceSettings]:
    out: dict[str, SourceSettings] = {}
    for name, body in raw.items():
        cls = sources.TYPES.get(name)
        if cls is None:
            known = ", ".join(sorted(sources.TYPES))
            problems.append(f"sources.{name}: unknown source (known: {known})")
            continue
        settings = _validate(cls.settings_model, body or {}, f"sources.{name}", problems)
        if settings is not None:
            out[name] = settings
    return out


def _cross_check(
    dests: Iterable[str],
    srcs: Mapping[str, SourceSettings],
    problems: list[str],
) -> None:
    known = set(dests)
    for name, src in srcs.items():
        for i, target in enumerate(src.send_to):
            if target not in known:
                problems.append(f"sources.{name}.send_to[{i}]: unknown destination '{target}'")


def _source_secrets(settings: SourceSettings) -> tuple[SecretStr, ...]:
    keys = getattr(settings, "api_keys", ())
    return tuple(k for k in keys if isinstance(k, SecretStr))
