"""Which actions a request may name: SQS's own, checked by name, with a suggestion."""

from __future__ import annotations

import difflib
import re

from raasctl.policy.model import PolicyError

# The SQS API's actions (the batch actions are requests, authorised as their single action).
SQS_API_ACTIONS = (
    "AddPermission",
    "CancelMessageMoveTask",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "CreateQueue",
    "DeleteMessage",
    "DeleteMessageBatch",
    "DeleteQueue",
    "GetQueueAttributes",
    "GetQueueUrl",
    "ListDeadLetterSourceQueues",
    "ListMessageMoveTasks",
    "ListQueueTags",
    "ListQueues",
    "PurgeQueue",
    "ReceiveMessage",
    "RemovePermission",
    "SendMessage",
    "SendMessageBatch",
    "SetQueueAttributes",
    "StartMessageMoveTask",
    "TagQueue",
    "UntagQueue",
)
_BY_LOWER = {f"sqs:{name}".lower(): f"sqs:{name}" for name in SQS_API_ACTIONS}
_ACTION_RE = re.compile(r"^[A-Za-z0-9-]+:[A-Za-z0-9]+$")


def _suggestion(text: str) -> str:
    close = difflib.get_close_matches(text.lower(), list(_BY_LOWER), n=1, cutoff=0.6)
    return f": did you mean {_BY_LOWER[close[0]]}?" if close else ""


def check_action(action: str) -> str:
    """``action`` as a request may name it, or :class:`PolicyError` with a suggestion.

    A request names one action (no wildcards) as ``service:Name``; an ``sqs:`` action must
    be one SQS has. Other services' actions are taken as written.
    """
    text = action.strip()
    if ":" not in text:
        hint = _suggestion(f"sqs:{text}")
        raise PolicyError(
            f"action {action!r} has no service prefix{hint or ' (e.g. sqs:SendMessage)'}"
        )
    if not _ACTION_RE.match(text):
        raise PolicyError(
            f"action {action!r} is not one action: expected service:Name, without wildcards "
            "(e.g. sqs:SendMessage)"
        )
    service = text.split(":", 1)[0].lower()
    if service == "sqs" and text.lower() not in _BY_LOWER:
        raise PolicyError(f"unknown SQS action {action!r}{_suggestion(text)}")
    return text
