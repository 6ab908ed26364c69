"""What a trace may hold: hashes and masked values, never plaintext personal data or a secret.

A trace shows the hit as it arrived, so everything in it passes through a `Masker` first:
configured secrets (API keys, tokens, the admin token) are replaced wherever they appear; query
parameters whose name says "secret" or that a `redact_url_params` rule names are masked in every
URL; and personal values (the plaintext user fields the source found in the hit, anything shaped
like an email address, a field named like a person's data) become `j•••@e•••.com` or `J•••`.
A SHA-256 (hex, or gtag's base64url) is shown as it is: it is what the gateway stores.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from gateway import sources
from gateway.event import HASHED_USER_FIELDS, JSON, Event
from gateway.personal_data import detect as pii
from gateway.personal_data import hashing

MASK: Final = "•••"
DOT: Final = "•"

# Words in a parameter's name that mark a credential (`access_token`, `api_secret`, `apiKey`).
_SECRET_WORDS: Final = frozenset(
    {"token", "secret", "password", "passwd", "pwd", "apikey", "key", "auth", "signature", "sig"}
)
_WORD: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_MAX_DEPTH: Final = 12
_USER_KEYS: Final = frozenset({"user", "user_data", "user_properties"})
# A TikTok pixel's `context.user` keys name a person as the canonical fields do.
_USER_FIELDS: Final = frozenset(HASHED_USER_FIELDS) | sources.TikTokPixel.user_keys.keys()
# Each tag's parameters that hold a person, by their source's word: plain means personal.
_PERSONAL_PARAMS: Final = frozenset(
    p for cls in sources.TYPES.values() for p in getattr(cls, "personal_params", ())
)
# Names that mean a person wherever they stand (`state` or `country` alone may not).
_PERSONAL_KEYS: Final = frozenset(
    {"email", "phone", "first_name", "last_name", "date_of_birth", "external_id"}
)


def mask_plain(value: str) -> str:
    """A plain personal value as a hint of its shape: `j•••@e•••.com`, `+1•••00`, `J•••`."""
    text = value.strip()
    if not text:
        return ""
    local, at, domain = text.partition("@")
    if at and domain:
        labels = domain.split(".")
        tld = labels[-1] if len(labels) > 1 else ""
        return f"{local[:1]}{MASK}@{labels[0][:1]}{MASK}" + (f".{tld}" if tld else "")
    return text[:1] + MASK


def secret_name(name: str) -> bool:
    """True for a parameter name that says it carries a credential."""
    words = [w.lower() for w in _WORD.findall(name)]
    joined = "".join(words)
    return bool(_SECRET_WORDS.intersection(words)) or joined in _SECRET_WORDS


def personal_values(events: Iterable[Event]) -> frozenset[str]:
    """The plaintext personal values the source found in a hit (hashes left out)."""
    found: set[str] = set()
    for event in events:
        for name in HASHED_USER_FIELDS:
            value = getattr(event.user, name)
            if value and not hashing.already_hashed(value):
                found.add(value.strip())
    return frozenset(v for v in found if v)


class Masker:
    """Masks one hit's trace: the gateway's secrets and redacted names, and this hit's
    personal values."""

    def __init__(
        self,
        secrets: Sequence[str],
        redacted: Collection[str] = (),
        personal: Collection[str] = (),
    ) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        forms = {s for secret in secrets if secret for s in (secret, quote(secret, safe=""))}
        self._secrets = sorted(forms, key=len, reverse=True)
        self._redacted = frozenset(n.lower() for n in redacted)
        self._personal = frozenset(personal)

    def with_personal(self, personal: Collection[str]) -> Masker:
        """The same masker, also masking these plaintext values."""
        masker = Masker((), self._redacted, self._personal | frozenset(personal))
        masker._secrets = self._secrets
        return masker

    def scrub(self, text: str) -> str:
        """The text with every configured secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def param(self, name: str, value: str) -> str:
        """One query or form parameter's value as a trace may show it."""
        if secret_name(name) or name.lower() in self._redacted:
            return MASK if value else value
        if name in _PERSONAL_PARAMS and value:
            return value if hashing.already_hashed(value) else mask_plain(value)
        return self.value(name, value)

    def value(self, name: str, value: str) -> str:
        """A free-form value: a URL has its parameters masked, personal data is masked."""
        if not value:
            return value
        if hashing.already_hashed(value):
            return value
        if value.startswith(("http://", "https://")):
            return self.url(value)
        stripped = value.strip()
        if stripped in self._personal or any(len(p) >= 5 and p in value for p in self._personal):
            return mask_plain(value)
        if pii.holds_email(value) or pii.personal_field(name, value):
            return mask_plain(value)
        return self.scrub(value)

    def pairs(self, pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
        """Query or form pairs, masked, in their order."""
        return [[self.scrub(k), self.param(k, v)] for k, v in pairs]

    def query_string(self, text: str) -> str:
        """A query string (or a line of a GA4 batch body), masked and re-encoded."""
        pairs = parse_qsl(text, keep_blank_values=True)
        return urlencode([(k, v) for k, v in self.pairs(pairs)], safe="[]/:,")

    def url(self, url: str) -> str:
        """A URL with its query (and a fragment shaped like a query) masked."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return mask_plain(url)
        query = self.query_string(parts.query) if parts.query else ""
        fragment = parts.fragment
        if "=" in fragment:
            fragment = self.query_string(fragment)
        netloc = parts.netloc
        if "@" in netloc:  # credentials in a URL
            netloc = MASK + "@" + netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))

    def json(self, value: JSON, key: str = "", depth: int = 0) -> JSON:
        """A JSON value with every string masked by its key and content."""
        if depth > _MAX_DEPTH:
            return MASK
        if isinstance(value, dict):
            user = key in _USER_KEYS
            return {str(k): self._json_item(str(k), v, depth, user) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v, key, depth + 1) for v in value]
        if isinstance(value, str):
            return self.param(key, value)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (pii.personal_field(key, value) or str(value) in self._personal):
            return mask_plain(str(value))
        return value

    def stored(self, value: JSON, key: str = "", depth: int = 0) -> JSON:
        """A stored payload or an outgoing body: already hashed by the pipeline, so only
        credentials and the parameters of its URLs are masked."""
        if depth > _MAX_DEPTH:
            return MASK
        if isinstance(value, dict):
            return {str(k): self.stored(v, str(k), depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.stored(v, key, depth + 1) for v in value]
        if isinstance(value, str):
            if secret_name(key):
                return MASK if value else value
            if value.startswith(("http://", "https://")):
                return self.url(value)
            return self.scrub(value)
        return value

    def _json_item(self, key: str, value: JSON, depth: int, user: bool) -> JSON:
        if isinstance(value, str) and (key in _PERSONAL_KEYS or (user and key in _USER_FIELDS)):
            # A person's field by its name (the canonical `user` block, a vendor's user
            # block): plain means personal.
            return value if hashing.already_hashed(value) else mask_plain(value)
        return self.json(value, key, depth + 1)
