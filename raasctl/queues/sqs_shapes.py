"""What SQS's requests and answers look like to raasctl: message attributes both ways, a
received message, a queue's RedrivePolicy, and the error codes the queue treats apart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raasctl.queues.base import ReceivedMessage

# A receipt handle from an earlier receive, or of a message already deleted.
STALE_RECEIPT = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidReceiptHandle",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)
# StartMessageMoveTask where the service (or a test double) does not offer it.
MOVE_UNSUPPORTED = frozenset(
    {
        "500",
        "501",
        "InternalError",
        "InternalFailure",
        "NotImplemented",
        "InvalidAction",
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
    }
)


@dataclass(frozen=True)
class Redrive:
    max_receive_count: int | None
    dead_letter_arn: str | None

    @classmethod
    def parse(cls, policy_json: str | None) -> Redrive:  # a queue's RedrivePolicy, or None
        policy = json_object(policy_json)
        max_receive = policy.get("maxReceiveCount")
        return cls(
            max_receive_count=int(max_receive) if max_receive is not None else None,
            dead_letter_arn=policy.get("deadLetterTargetArn"),
        )


def attribute_values(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
    }


def attribute_strings(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return {
        name: str(value["StringValue"]) for name, value in raw.items() if "StringValue" in value
    }


def received_message(raw: Mapping[str, Any]) -> ReceivedMessage:
    system = raw.get("Attributes", {})
    return ReceivedMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        receive_count=int(system.get("ApproximateReceiveCount", 1)),
        attributes=attribute_strings(raw.get("MessageAttributes", {})),
        group_id=system.get("MessageGroupId"),
    )


def json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
