"""The embedded queue's rows and the messages they become: the sizes and attributes of
messages sent, the messages a receive hands out, and receipt handles (`seq:token`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from raasctl.queues.base import OutgoingMessage, ReceivedMessage, message_bytes

# A claimed row of queue_messages: seq, message_id, body, group_id, attributes (JSON text
# or NULL), receive_count before the claim.
ClaimedRow = tuple[int, str, str, str | None, str | None, int]


def received_messages(rows: Sequence[ClaimedRow], token: str) -> list[ReceivedMessage]:
    """The messages of rows claimed with `token`. A run's messages share one attributes
    text: each distinct text is decoded once, and the messages share it read-only."""
    decoded: dict[str, Mapping[str, str]] = {}
    messages = []
    for seq, message_id, body, group, attributes, count in rows:
        mapping: Mapping[str, str] = {}
        if attributes:
            found = decoded.get(attributes)
            if found is None:
                found = decoded[attributes] = MappingProxyType(json.loads(attributes))
            mapping = found
        messages.append(
            ReceivedMessage(
                message_id=message_id,
                receipt_handle=f"{seq}:{token}",
                body=body,
                receive_count=count + 1,
                attributes=mapping,
                group_id=group,
            )
        )
    return messages


def rows_within(
    rows: Iterable[ClaimedRow], budget: int, max_receive_count: int, *, first: bool
) -> tuple[list[ClaimedRow], int | None]:
    """The leading rows until the bodies of those to deliver pass `budget` characters (when
    `first`, nothing is taken yet: at least one, whatever its size); rows received
    `max_receive_count` times (for the DLQ) pass uncounted. With them, the budget left, or
    None when the budget cut them."""
    kept: list[ClaimedRow] = []
    delivered = False
    for row in rows:
        if row[5] < max_receive_count:
            if budget < len(row[2]) and (delivered or not first):
                return kept, None
            budget -= len(row[2])
            delivered = True
        kept.append(row)
    return kept, budget


def within_size(messages: Sequence[OutgoingMessage], limit: int) -> bool:
    """`reject_oversized` would pass: the same sizes, counted faster for the common case of
    messages that share one attributes mapping (a run's)."""
    attribute_sizes: dict[int, int] = {}
    for message in messages:
        body = message.body
        # A body of at most limit / 4 characters is within the limit in any encoding.
        size = len(body)
        if size * 4 > limit and not body.isascii():
            size = len(body.encode())
        attributes = message.attributes
        extra = attribute_sizes.get(id(attributes))
        if extra is None:
            extra = message_bytes(OutgoingMessage("", attributes=attributes))
            attribute_sizes[id(attributes)] = extra
        if size + extra > limit:
            return False
    return True


def attributes_json(
    attributes: Mapping[str, str], cache: dict[int, tuple[Mapping[str, str], str | None]]
) -> str | None:
    """The attributes as stored, encoded once per mapping (a run's messages share one)."""
    cached = cache.get(id(attributes))
    if cached is None or cached[0] is not attributes:
        cached = (attributes, json.dumps(dict(attributes)) if attributes else None)
        cache[id(attributes)] = cached
    return cached[1]


def parse_receipt(handle: str) -> tuple[int, str] | None:
    seq, _, token = handle.partition(":")
    if not seq.isdigit() or not token:
        return None
    return int(seq), token
