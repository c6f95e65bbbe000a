"""The one classifier of botocore failures, used by every AWS adapter and the CLI.

`classify(exc, service=..., action=..., resource=...)` says what a failure means: its
category, the ErrorCode, a one-line message naming the resource and the IAM action, whether
retrying can help, and the exit code. Adapters raise their own error class with it
(`failure.error(QueueError)`); code that only needs the category of an answer, such as the
access check, asks `category(exc)` and `error_detail(exc)` without building an exception.

botocore reports a failure as a `ClientError` (the service answered with an error code) or a
`BotoCoreError` (no answer: no credentials, no region, a connection or timeout failure), and
as a `ResponseParserError` (not a BotoCoreError) when the answer cannot be read. Services spell
the same problem differently (SQS `AWS.SimpleQueueService.NonExistentQueue`, DynamoDB
`ResourceNotFoundException`, SSM `ParameterNotFound`), and moto's SQS under IAM auth answers in
XML that boto3 reports as the code "403": the sets below are kept here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    InvalidConfigError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from raasctl.codes import ErrorCode
from raasctl.errors import RaasctlError

# What a failed call raises: an error answer, no answer, or an answer botocore cannot parse.
AWS_FAILURES = (ClientError, BotoCoreError, ResponseParserError)


class Category(StrEnum):
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"
    CREDENTIALS_MISSING = "credentials_missing"
    CREDENTIALS_INVALID = "credentials_invalid"
    THROTTLED = "throttled"
    UNREACHABLE = "unreachable"
    UNREADABLE = "unreadable"  # an answer botocore cannot parse
    FAILED = "failed"


_NOT_FOUND = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "ResourceNotFoundException",
        "ParameterNotFound",
        "NoSuchEntity",
    }
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "KMS.AccessDeniedException",
        "AuthorizationError",
        "UnauthorizedOperation",
        "InvalidSecurity",
        "403",  # moto under IAM auth: an XML answer boto3 reads as the code "403"
    }
)
# The caller's key or its signature is refused: no permission change helps, new keys do.
_BAD_CREDENTIALS = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidAccessKeyId",
    }
)
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "OverLimit",
        "KmsThrottled",
        "AWS.SimpleQueueService.PurgeQueueInProgress",
        "PurgeQueueInProgress",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_INVALID_CREDENTIALS = (PartialCredentialsError, CredentialRetrievalError, InvalidConfigError)
_E = TypeVar("_E", bound=RaasctlError)
_XML_ERROR = re.compile(r"<Code>([^<]*)</Code>\s*<Message>([^<]*)</Message>")
_CREDENTIALS_HINT = (
    "set a profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run on a machine with a role"
)


@dataclass(frozen=True)
class _Service:
    title: str  # how messages name the service
    noun: str  # what its resources are called ("" when the resource names itself, a URL)
    not_found: ErrorCode = ErrorCode.AWS_FAILED
    not_found_exit: int = 1
    throttled: ErrorCode = ErrorCode.AWS_FAILED
    unreachable: ErrorCode = ErrorCode.AWS_FAILED
    failed: ErrorCode = ErrorCode.AWS_FAILED
    not_found_text: str = "{label} does not exist"


_SERVICES = {
    "sqs": _Service(
        "SQS",
        "",
        not_found=ErrorCode.QUEUE_NOT_FOUND,
        throttled=ErrorCode.QUEUE_THROTTLED,
        unreachable=ErrorCode.QUEUE_UNREACHABLE,
        failed=ErrorCode.QUEUE_FAILED,
        not_found_text="queue {label} does not exist",
    ),
    "dynamodb": _Service(
        "DynamoDB",
        "DynamoDB table",
        not_found=ErrorCode.STATE_NOT_FOUND,
        failed=ErrorCode.STATE_FAILED,
        throttled=ErrorCode.STATE_FAILED,
        unreachable=ErrorCode.STATE_FAILED,
    ),
    # A missing parameter is a secret reference that names nothing: a configuration error.
    "ssm": _Service(
        "SSM",
        "SSM parameter",
        not_found=ErrorCode.SECRET_UNRESOLVED,
        not_found_exit=2,
        not_found_text="{label} not found",
    ),
}
_GENERIC = _Service("AWS", "")

# Errors that no pause and retry can mend: a worker stops at once with them (exit 1 or 2)
# instead of retrying for minutes. Transient ones (unreachable, throttled, generic) are not.
UNFIXABLE_CODES = frozenset(
    {
        ErrorCode.QUEUE_NOT_FOUND,
        ErrorCode.STATE_NOT_FOUND,
        ErrorCode.ACCESS_DENIED,
        ErrorCode.CREDENTIALS_MISSING,
        ErrorCode.CREDENTIALS_INVALID,
    }
)


def is_unfixable(code: ErrorCode) -> bool:
    """True for a code that waiting and retrying cannot mend (see UNFIXABLE_CODES)."""
    return code in UNFIXABLE_CODES


@dataclass(frozen=True)
class AwsFailure:
    category: Category
    code: ErrorCode
    message: str  # one line, naming the resource and the IAM action
    retryable: bool  # whether the same call may succeed later
    exit_code: int

    def error(self, kind: type[_E]) -> _E:
        """The failure as a `kind` (QueueError, StateError, RuntimeFailure...), with this
        code and exit code."""
        return kind(self.message, code=self.code, exit_code=self.exit_code)


def error_detail(exc: BaseException) -> tuple[str, str]:
    """The service's error code and message; for an XML error body boto3 could not parse
    (moto's SQS under IAM auth), the code and message inside it. Not a ClientError: the
    exception's type name and text."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
        inner = _XML_ERROR.search(message)
        if inner:
            return inner.group(1), inner.group(2)
        return code, message
    return type(exc).__name__, str(exc)


def category(exc: BaseException) -> Category:
    """What kind of failure `exc` is, with no context and no exception built."""
    if isinstance(exc, _UNREACHABLE):
        return Category.UNREACHABLE
    if isinstance(exc, NoCredentialsError | NoRegionError):
        return Category.CREDENTIALS_MISSING
    if isinstance(exc, _INVALID_CREDENTIALS):
        return Category.CREDENTIALS_INVALID
    if isinstance(exc, ResponseParserError):
        return Category.UNREADABLE
    if not isinstance(exc, ClientError):
        return Category.FAILED
    code, _ = error_detail(exc)
    status = _status(exc)
    if code in _NOT_FOUND:
        return Category.NOT_FOUND
    if code in _BAD_CREDENTIALS:
        return Category.CREDENTIALS_INVALID
    if code in _DENIED or "AccessDenied" in code or status == 403:
        return Category.ACCESS_DENIED
    if code in _THROTTLED or status == 429:
        return Category.THROTTLED
    return Category.FAILED


def classify(
    exc: BaseException, *, service: str, action: str | None = None, resource: str | None = None
) -> AwsFailure:
    """What `exc`, raised by `action` (an IAM action such as `sqs:SendMessage`) on `resource`
    of `service` ("sqs", "dynamodb", "ssm", or any other), means for the caller."""
    info = _SERVICES.get(service, _GENERIC)
    kind = category(exc)
    if action is None:
        action = getattr(exc, "operation_name", None)
    label = _label(info, resource)
    # What was called on what, as far as known: "sqs:SendMessage on https://...".
    call = " on ".join(part for part in (action, label) if part)
    detail = _detail(exc)
    if kind is Category.NOT_FOUND:
        text = info.not_found_text.format(label=label or "the resource")
        message = f"{text} ({action}: {detail})" if action else f"{text} ({detail})"
        return _failure(kind, info.not_found, message, False, exit_code=info.not_found_exit)
    if kind is Category.ACCESS_DENIED:
        message = f"access denied: {call or 'AWS call'} ({detail})"
        return _failure(kind, ErrorCode.ACCESS_DENIED, message, False)
    if kind is Category.CREDENTIALS_MISSING:
        if isinstance(exc, NoRegionError):
            message = f"no AWS region{_for(call)}: set aws.region in the config"
        else:
            message = f"no AWS credentials found{_for(call)} ({_CREDENTIALS_HINT})"
        return _failure(kind, ErrorCode.CREDENTIALS_MISSING, message, False, exit_code=2)
    if kind is Category.CREDENTIALS_INVALID:
        message = f"AWS credentials refused{_for(call)}: {detail}"
        return _failure(kind, ErrorCode.CREDENTIALS_INVALID, message, False, exit_code=2)
    if kind is Category.THROTTLED:
        message = f"{info.title} throttled {call or 'a call'} ({detail}); try again later"
        return _failure(kind, info.throttled, message, True)
    if kind is Category.UNREACHABLE:
        message = f"cannot reach {info.title}{_for(call)}: {exc}"
        return _failure(kind, info.unreachable, message, True)
    failed = f"{call} failed" if label else f"AWS {action or 'call'} failed"
    if kind is Category.UNREADABLE:
        message = f"{failed}: the {info.title} endpoint sent a response botocore cannot read"
        return _failure(kind, info.failed, message, True)
    status = _status(exc) if isinstance(exc, ClientError) else None
    # A server-side failure may pass; a refused request (4xx) is refused again.
    retryable = status is None or status >= 500
    return _failure(kind, info.failed, f"{failed}: {detail}", retryable)


def _for(call: str) -> str:
    return f" for {call}" if call else ""


def _failure(
    kind: Category, code: ErrorCode, message: str, retryable: bool, *, exit_code: int = 1
) -> AwsFailure:
    return AwsFailure(kind, code, _one_line(message), retryable, exit_code)


def _label(info: _Service, resource: str | None) -> str:
    if not resource:
        return ""
    return f"{info.noun} {resource}" if info.noun else resource


def _detail(exc: BaseException) -> str:
    if not isinstance(exc, ClientError):
        return str(exc) or type(exc).__name__
    code, message = error_detail(exc)
    return f"{code}: {message}".strip(": ") or "error"


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
