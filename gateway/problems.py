"""Config problems in the YAML's own terms, each under its key path
(`destinations.meta.pixel_id: required`), for `config.py` and the field rules alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

# pydantic's wording is about Python types ("input should be a valid tuple"); a shop writes YAML.
PLAIN: Final = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be above {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be below {lt}",
    "string_too_short": "must be at least {min_length} characters",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
}
"""The wording of each pydantic error type; `{name}` is filled from the error's context."""
_PATTERNS: Final = {
    "^/": "must start with /",
    "^https?://": "must start with http:// or https://",
    "^postgres(ql)?://": "must start with postgresql://",
}


def join(path: str, key: str) -> str:
    """`path.key`, or `key` at the top."""
    return f"{path}.{key}" if path else key


def describe(
    exc: ValidationError, prefix: str, wording: Mapping[str, str] | None = None
) -> list[str]:
    """One `key.path: problem` line per error; `wording` replaces `PLAIN` for the types it names."""
    lines = []
    errors = exc.errors(include_input=False, include_url=False)
    for error in errors:
        if error["type"] == "too_short" and any(
            e["loc"][: len(error["loc"])] == error["loc"] and e is not error for e in errors
        ):
            continue  # "at least 1 item" only because an item failed: that item says why
        where = prefix
        for part in error["loc"]:
            where = f"{where}[{part}]" if isinstance(part, int) else join(where, str(part))
        kind = error["type"]
        if wording and kind in wording:
            problem = wording[kind]
        else:
            problem = plain(kind, error["msg"], error.get("ctx"))
        lines.append(f"{where or '<top>'}: {problem}")
    return lines


def plain(kind: str, msg: str, ctx: Mapping[str, Any] | None) -> str:
    """One problem in the config's terms: "must be a list", never "a valid tuple"."""
    ctx = ctx or {}
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERNS.get(pattern, f"does not have the expected form ({pattern})")
    if kind in PLAIN:
        try:
            return PLAIN[kind].format(**ctx)
        except (KeyError, IndexError):
            pass
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    for python, plain_words in (("Input should be", "must be"), ("String should", "must")):
        msg = msg.replace(python, plain_words)
    return msg[:1].lower() + msg[1:]
