"""What a trace shows of an event and of a request's body: typed values as JSON, personal data
and secrets masked (`mask.Masker`), bodies cut at `BODY_BYTES`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Final

import orjson

from gateway.event import CLEAR_USER_FIELDS, HASHED_USER_FIELDS, JSON, Event
from gateway.personal_data import hashing
from gateway.preview.mask import MASK, Masker, mask_plain
from gateway.sources.forms import form_pairs

BODY_BYTES: Final = 16 * 1024


def canonical(event: Event, masker: Masker) -> dict[str, JSON]:
    """The canonical event with personal data masked (hashes shown as they are)."""
    user: dict[str, JSON] = {}
    for name in HASHED_USER_FIELDS:
        value = getattr(event.user, name)
        if value:
            user[name] = hashing.already_hashed(value) or mask_plain(value)
    for name in CLEAR_USER_FIELDS:
        value = getattr(event.user, name)
        if value:
            user[name] = value
    user.update(event.user.ids)
    custom: dict[str, JSON] = {}
    for f in fields(event.custom):
        value = getattr(event.custom, f.name)
        if value in (None, (), {}):
            continue
        if f.name == "extra":
            custom.update(masker.json(dict(value)) or {})
        elif f.name == "contents":
            custom[f.name] = [
                {k.name: _jsonable(getattr(c, k.name)) for k in fields(c) if getattr(c, k.name)}
                for c in value
            ]
        elif isinstance(value, str):
            custom[f.name] = masker.value(f.name, value)
        else:
            custom[f.name] = _jsonable(value)
    return {
        "event_id": event.event_id,
        "event_name": event.event_name,
        "event_time": event.event_time,
        "source": event.source,
        "action_source": event.action_source,
        "event_source_url": event.event_source_url and masker.url(event.event_source_url),
        "referrer": event.referrer and masker.url(event.referrer),
        "user": user,
        "custom": custom,
        "consent_signals": masker.json(dict(event.consent_signals)),
        "dedupable": event.dedupable,
        "extras": masker.json({name: _plain(x) for name, x in _extras(event) if x is not None}),
    }


def _extras(event: Event) -> list[tuple[str, object]]:
    return [("meta", event.meta), ("ga4", event.ga4), ("tiktok", event.tiktok)]


def _plain(value: object) -> JSON:
    """A typed value as JSON values: dataclasses as objects, mappings and tuples opened."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _jsonable(value)


def _jsonable(value: object) -> JSON:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def request_body(masker: Masker, body: bytes | None, content_type: str) -> dict[str, JSON]:
    """A hit's body, masked: JSON as JSON, a form as pairs, GA4's lines as lines."""
    if not body:
        return {}
    size = len(body)
    if size > 4 * BODY_BYTES:
        return {"body_note": f"{size} bytes, not kept"}
    ctype = content_type.lower()
    if "json" in ctype or body[:1] in (b"{", b"["):
        try:
            return {"body_json": masker.json(orjson.loads(body))}
        except orjson.JSONDecodeError:
            pass
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return {"body_form": masker.pairs(form_pairs(body, content_type))}
    text = body.decode("utf-8", errors="replace")
    lines = [masker.query_string(line) if "=" in line else MASK for line in text.splitlines()]
    return {"body_text": "\n".join(lines)[:BODY_BYTES]}


def body_text(masker: Masker, body: bytes | None) -> str | None:
    """An outgoing request's body as the trace shows it: secrets out, cut at BODY_BYTES."""
    if body is None:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace")
        lines = [masker.query_string(line) if "=" in line else line for line in text.split("\n")]
        text = masker.scrub("\n".join(lines))
    else:
        text = orjson.dumps(masker.stored(value)).decode()
    if len(text) > BODY_BYTES:
        return text[:BODY_BYTES] + f"… ({len(text)} characters in all)"
    return text
