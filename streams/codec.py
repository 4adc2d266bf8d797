"""JSON on the wire: encode an event, or decode one with a precise reason when it is bad."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import ValidationError

from streams.events import SCHEMA_MAJOR, TIMESTAMP_FIELDS, Event, is_known_major

E = TypeVar("E", bound=Event)

# Why a message was refused; these strings travel as the dead-letter ``reason`` header.
OVERSIZE = "oversize"
UNDECODABLE = "undecodable"
INVALID_JSON = "invalid_json"
UNKNOWN_VERSION = "unknown_version"
TEACHER_SIGNAL = "teacher_signal"
TIMESTAMP = "timestamp"
SCHEMA = "schema"
REASONS = (OVERSIZE, UNDECODABLE, INVALID_JSON, UNKNOWN_VERSION, TEACHER_SIGNAL, TIMESTAMP, SCHEMA)

MAX_DETAIL = 1000


class DecodeError(ValueError):
    """A message that is not a valid event; ``reason`` is one of ``REASONS``, ``detail`` says what was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown decode reason {reason!r}")
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail[:MAX_DETAIL]

    def __str__(self) -> str:
        return f"{DESCRIPTIONS[self.reason]}: {self.detail}"


# What each reason means, in words a person reads (the DLQ listing shows them).
DESCRIPTIONS = {
    OVERSIZE: "message is larger than the limit",
    UNDECODABLE: "message is not UTF-8 text",
    INVALID_JSON: "message is not valid JSON",
    UNKNOWN_VERSION: "message has a schema version this reader does not know",
    TEACHER_SIGNAL: "message has an invalid teacher signal",
    TIMESTAMP: "message has a time without a zone, or one outside years 1-9999 in UTC",
    SCHEMA: "message does not match the event schema",
}


def encode(event: Event) -> bytes:
    """The event as compact UTF-8 JSON."""
    return event.model_dump_json().encode("utf-8")


def decode(raw: bytes | None, cls: type[E], max_bytes: int) -> E:
    """Parses and validates ``raw`` as ``cls``, or raises ``DecodeError``.

    Checks run from cheapest to most specific: size first (before any parsing), then UTF-8, JSON,
    the schema's major version, and finally the schema, where an error inside ``teacher``, then one in a
    time field (``timestamp``: no zone, unparsable, or out of range), is told apart from any other.
    """
    if raw is None:
        raise DecodeError(UNDECODABLE, "the record has no value")
    if len(raw) > max_bytes:
        raise DecodeError(OVERSIZE, f"{len(raw)} bytes > limit of {max_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(UNDECODABLE, str(exc)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(INVALID_JSON, str(exc)) from exc
    except RecursionError as exc:
        # Deeply nested arrays ("[[[[...") exhaust the parser's stack; that is bad input, not a crash.
        raise DecodeError(INVALID_JSON, "JSON nested too deeply") from exc
    except ValueError as exc:
        # Not a JSONDecodeError: an integer literal of more than 4300 digits trips Python's int-conversion
        # limit (sys.get_int_max_str_digits) inside the parser; that too is bad input, not a crash.
        raise DecodeError(INVALID_JSON, str(exc)) from exc
    if not isinstance(data, dict):
        raise DecodeError(SCHEMA, f"expected a JSON object, got {type(data).__name__}")
    _check_version(data)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _classify(exc) from exc


def _check_version(data: dict[str, Any]) -> None:
    # Told apart from other schema errors: a newer major version calls for an upgrade, not a fix.
    if "schema_version" not in data:
        return  # the field has a default; absence means the current version
    version = data["schema_version"]
    if not isinstance(version, str):
        raise DecodeError(UNKNOWN_VERSION, f"schema_version must be a string like '1.0', got {version!r}")
    if not is_known_major(version):
        raise DecodeError(UNKNOWN_VERSION, f"schema_version {version!r}; this reader knows {SCHEMA_MAJOR}.x")


def _classify(exc: ValidationError) -> DecodeError:
    errors = exc.errors(include_url=False)
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors)
    if any(e["loc"] and e["loc"][0] == "teacher" for e in errors):
        return DecodeError(TEACHER_SIGNAL, detail)
    if any(e["loc"] and e["loc"][0] in TIMESTAMP_FIELDS for e in errors):
        return DecodeError(TIMESTAMP, detail)
    return DecodeError(SCHEMA, detail)
