"""The message envelope (DESIGN.md "Message envelope"): body, entry keys, dedup and group ids."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from raasctl.queues.base import MAX_DEDUP_ID_CHARS, OutgoingMessage

VERSION = 1
_FIELDS = ("v", "cron", "run_id", "key", "payload", "mock", "enqueued_at")
# The text fields in the order `from_body` reads them.
_TEXT_FIELDS = ("cron", "run_id", "key", "enqueued_at", "entity_id", "version")
_DECODER = json.JSONDecoder()
_JSON_WHITESPACE = " \t\n\r"  # JSON's whitespace, no more: json.loads refuses other trailers
# SQS MessageGroupId: up to 128 characters of alphanumerics and punctuation.
_GROUP_ID_OK = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}$")


class EnvelopeError(ValueError):
    """A message body that is not a valid envelope; the reason goes with it to the DLQ."""


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def payload_hash(payload: dict[str, Any], *, payload_json: str | None = None) -> str:
    """`payload_json`: canonical_json(payload), when the caller has written it already."""
    text = canonical_json(payload) if payload_json is None else payload_json
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def entry_key(
    cron: str, entity_id: str, payload: dict[str, Any], *, payload_json: str | None = None
) -> str:
    """Identifies an entry's content: the same change re-reported has the same key, two
    different entries never share one."""
    return f"{cron}:{entity_id}:{payload_hash(payload, payload_json=payload_json)}"


def mock_key(key: str, run_id: str, n: int) -> str:
    """A load-test copy: every copy is its own entry, so none is deduplicated away."""
    return f"{key}:mock:{run_id}:{n}"


def dedup_id(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert len(digest) <= MAX_DEDUP_ID_CHARS
    return digest


def group_id(entity_id: str) -> str:
    if _GROUP_ID_OK.match(entity_id):
        return entity_id
    return hashlib.sha256(entity_id.encode()).hexdigest()


@dataclass(frozen=True)
class Envelope:
    cron: str
    run_id: str
    key: str
    payload: dict[str, Any]
    mock: bool = False
    enqueued_at: str = ""
    # The record this entry changes, and the version of it (the report run's time, ISO UTC):
    # an entry older than the version already applied for its record is superseded. Empty in
    # bodies written before versions existed (no version check then).
    entity_id: str = ""
    version: str = ""

    @classmethod
    def new(
        cls,
        *,
        cron: str,
        run_id: str,
        key: str,
        payload: dict[str, Any],
        mock: bool = False,
        now: datetime | None = None,
        entity_id: str = "",
        version: str = "",
    ) -> Envelope:
        at = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
        return cls(
            cron=cron,
            run_id=run_id,
            key=key,
            payload=payload,
            mock=mock,
            enqueued_at=at,
            entity_id=entity_id,
            version=version,
        )

    def to_body(self) -> str:
        body: dict[str, Any] = {
            "v": VERSION,
            "cron": self.cron,
            "run_id": self.run_id,
            "key": self.key,
            "payload": self.payload,
            "mock": self.mock,
            "enqueued_at": self.enqueued_at,
        }
        if self.version:
            body["entity_id"] = self.entity_id
            body["version"] = self.version
        return canonical_json(body)

    def to_message(self, entity_id: str, *, label: str = "") -> OutgoingMessage:
        return OutgoingMessage(
            body=self.to_body(),
            group_id=group_id(entity_id),
            dedup_id=dedup_id(self.key),
            attributes={"cron": self.cron, "run_id": self.run_id},
            label=label or self.key,
        )

    @classmethod
    def from_body(cls, body: str) -> Envelope:
        """The envelope in a message body; EnvelopeError says why a body is not one (the
        worker dead-letters it with that reason). It runs for every message a worker
        receives, so the common case is checked with as few steps as it takes."""
        data = _decode(body)
        if type(data) is not dict:
            raise EnvelopeError("body is not a JSON object")
        version = data.get("v")
        # `type(...) is int`: JSON's true would otherwise pass as version 1.
        if type(version) is not int or version != VERSION:
            raise EnvelopeError(f"unknown envelope version {version!r}")
        try:
            texts = (
                data["cron"],
                data["run_id"],
                data["key"],
                data["enqueued_at"],
                data.get("entity_id", ""),  # optional: older bodies lack them
                data.get("version", ""),
            )
            payload, mock = data["payload"], data["mock"]
        except KeyError:
            missing = [name for name in _FIELDS if name not in data]
            raise EnvelopeError(f"envelope lacks {', '.join(missing)}") from None
        if type(payload) is not dict:
            raise EnvelopeError("envelope payload is not an object")
        if type(mock) is not bool:
            raise EnvelopeError(f"envelope mock is not a boolean ({mock!r})")
        # A lone surrogate comes from a \\u escape, or from a string made in this process;
        # an ASCII body without escapes holds none.
        unchecked = "\\u" in body or not body.isascii()
        for name, value in zip(_TEXT_FIELDS, texts, strict=True):
            if type(value) is not str:
                raise EnvelopeError(f"envelope {name} is not a string")
            if unchecked and not is_valid_unicode(value):
                raise EnvelopeError(f"envelope {name} is not valid Unicode (a lone surrogate)")
        cron, run_id, key, enqueued_at, entity_id, entity_version = texts
        return cls(cron, run_id, key, payload, mock, enqueued_at, entity_id, entity_version)


def _decode(body: str) -> Any:
    """The JSON value of a body: the decoder's scan without `json.loads`' wrapping, and
    `json.loads` itself (its errors, leading whitespace) for any body the scan refuses."""
    try:
        data, end = _DECODER.raw_decode(body)
        if end == len(body) or not body[end:].strip(_JSON_WHITESPACE):
            return data
    except ValueError:
        pass
    except RecursionError:
        raise EnvelopeError("body is nested too deep to read") from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise EnvelopeError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise EnvelopeError("body is nested too deep to read") from None


def is_valid_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's "\\ud800"), which no UTF-8 system
    can store: two distinct ids would collide once it is replaced."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
