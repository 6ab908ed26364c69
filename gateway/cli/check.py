"""`check`: validate a config and print what it sets up, defaults included."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway import app as app_module
from gateway import config as config_module
from gateway import sources
from gateway.config import Config, ConfigError
from gateway.rules import field_rules as r


def check(path: str | None) -> int:
    """Validate a config; print a summary, or one line per problem and exit 1."""
    located = config_module.locate(path)
    try:
        cfg = config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    print(f"config: {located or config_module.EMBEDDED}")
    ops = cfg.listen.ops
    ops_label = f"   ops: {ops.host or cfg.listen.host}:{ops.port}" if ops else ""
    print(
        f"listen: {cfg.listen.host}:{cfg.listen.port}{ops_label}   storage: {_storage_label(cfg)}"
    )
    buffer = cfg.storage.outage_buffer
    print(
        f"outage buffer: {buffer.max_events} events / {buffer.max_bytes / 1_048_576:g} MiB"
        f"   retention: {cfg.storage.retention_days} days   synchronous: {cfg.storage.synchronous}"
    )
    # Every destination with the settings it runs with, defaults included: a shop must see
    # that meta_capi waits for ad_storage and ad_user_data without having written it.
    print("destinations:")
    for name, dest in app_module.build_destinations(cfg).items():
        settings = dest.settings
        print(f"  {name}: {dest.describe()}")
        requires = dest.requires_text()
        events = ", ".join(settings.events) if settings.events is not None else "all"
        print(
            f"    requires {requires} (on_denied: {settings.on_denied}); events: {events};"
            f" batch {dest.batch_size}, {settings.retry.describe()},"
            f" timeout {settings.timeout_ms} ms"
        )
    print("sources:")
    for name, source_settings in cfg.sources.items():
        source = sources.TYPES[name](source_settings)
        paths = sorted({path for _, path in source.routes()})
        targets = ", ".join(source_settings.send_to) or "(nowhere)"
        print(f"  {name}: {' '.join(paths)} -> {targets}")
    print("rules:" + ("" if cfg.rules else " none"))
    for rule in cfg.rules:
        print(f"  {rule.index + 1}. {_rule_label(rule)}")
    cookie = cfg.cookies
    print(
        f"cookies: _fbp/_fbc/_ttp/ttclid on {cookie.domain} for {cookie.max_age_days} days"
        if cookie
        else "cookies: none set"
    )
    print("scripts:" + ("" if cfg.scripts else " none"))
    for script in cfg.scripts:
        print(f"  {script.path} <- {script.upstream} (ttl {script.ttl})")
    print("admin: /admin (token set)" if cfg.admin else "admin: off (no admin.token)")
    consent = cfg.consent
    tcf = f"on (cookie {consent.tcf_cookie})" if consent.tcf and consent.tcf_cookie else None
    print(
        f"consent: default {consent.default}, honor_gpc {'on' if consent.honor_gpc else 'off'},"
        f" tcf {tcf or ('on' if consent.tcf else 'off')}"
    )
    if not cfg.sources:
        print("warning: no source is configured, so the gateway takes no hits")
    return 0


def _rule_label(rule: Any) -> str:
    """One rule as `check` shows it: its scope, then its action."""
    scope = f"[{rule.destination}] " if rule.destination else ""
    if rule.events is not None:
        scope += f"[events {', '.join(sorted(rule.events))}] "
    action = rule.action
    if isinstance(action, r.RedactUrlParams):
        text = f"redact_url_params: {', '.join(sorted(action.names))}"
    elif isinstance(action, r.DropFields):
        text = f"drop_fields: {', '.join(str(p) for p in action.paths)}"
    elif isinstance(action, r.SetFields):
        text = "set: " + ", ".join(f"{path}={value}" for path, value in action.values)
    elif isinstance(action, r.RenameEvent):
        text = f"rename_event: {action.old} -> {action.new}"
    else:
        conditions = []
        if action.user_agent is not None:
            conditions.append(f"user agent matches {action.user_agent.pattern}")
        if action.networks is not None:
            conditions.append(f"IP in {', '.join(str(n) for n in action.networks)}")
        if action.event_names is not None:
            conditions.append(f"named {', '.join(sorted(action.event_names))}")
        text = "drop_events: " + " and ".join(conditions)
    return scope + text


def _storage_label(cfg: Config) -> str:
    """Where events are kept, without a password."""
    if not cfg.storage.url:
        return cfg.storage.path
    parts = urlsplit(cfg.storage.url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
