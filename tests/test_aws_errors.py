"""The one classifier of botocore failures (raasctl/aws_errors.py), and what it decides for the
worker: a missing state table stops it at once, like a missing queue."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
    WaiterError,
)
from botocore.parsers import ResponseParserError
from click.testing import CliRunner
from moto import mock_aws

from raasctl.aws_errors import (
    UNFIXABLE_CODES,
    Category,
    category,
    classify,
    error_detail,
    is_unfixable,
)
from raasctl.cli import main
from raasctl.codes import ErrorCode
from raasctl.envelope import Envelope
from raasctl.errors import QueueError, StateError
from raasctl.queues.sqlite import SqliteQueue

QUEUE = "https://sqs.us-east-1.amazonaws.com/111122223333/raas.fifo"
TABLE = "raasctl-work-uat"
PARAMETER = "/work-uat/accounting/callback-token"


def client_error(code: str, status: int, operation: str = "SendMessage") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "first line\nsecond line"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


# (exception, service, action, resource) -> (code, retryable, exit code)
CASES: list[tuple[str, BaseException, str, str, str, ErrorCode, bool, int]] = [
    (
        "sqs denied",
        client_error("AccessDenied", 403),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.ACCESS_DENIED,
        False,
        1,
    ),
    (
        "moto's XML 403",
        client_error("403", 403),
        "sqs",
        "sqs:ReceiveMessage",
        QUEUE,
        ErrorCode.ACCESS_DENIED,
        False,
        1,
    ),
    (
        "kms denied",
        client_error("KMS.AccessDeniedException", 400),
        "sqs",
        "sqs:ReceiveMessage",
        QUEUE,
        ErrorCode.ACCESS_DENIED,
        False,
        1,
    ),
    (
        "dynamodb denied",
        client_error("AccessDeniedException", 400, "UpdateItem"),
        "dynamodb",
        "dynamodb:UpdateItem",
        TABLE,
        ErrorCode.ACCESS_DENIED,
        False,
        1,
    ),
    (
        "queue missing",
        client_error("AWS.SimpleQueueService.NonExistentQueue", 400),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.QUEUE_NOT_FOUND,
        False,
        1,
    ),
    (
        "queue missing (JSON protocol)",
        client_error("QueueDoesNotExist", 400),
        "sqs",
        "sqs:GetQueueAttributes",
        QUEUE,
        ErrorCode.QUEUE_NOT_FOUND,
        False,
        1,
    ),
    (
        "state table missing",
        client_error("ResourceNotFoundException", 400, "GetItem"),
        "dynamodb",
        "dynamodb:GetItem",
        TABLE,
        ErrorCode.STATE_NOT_FOUND,
        False,
        1,
    ),
    (
        "parameter missing",
        client_error("ParameterNotFound", 400, "GetParameter"),
        "ssm",
        "ssm:GetParameter",
        PARAMETER,
        ErrorCode.SECRET_UNRESOLVED,
        False,
        2,
    ),
    (
        "sqs throttled",
        client_error("ThrottlingException", 400),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.QUEUE_THROTTLED,
        True,
        1,
    ),
    (
        "purge in progress",
        client_error("AWS.SimpleQueueService.PurgeQueueInProgress", 400, "PurgeQueue"),
        "sqs",
        "sqs:PurgeQueue",
        QUEUE,
        ErrorCode.QUEUE_THROTTLED,
        True,
        1,
    ),
    (
        "dynamodb throughput",
        client_error("ProvisionedThroughputExceededException", 400, "UpdateItem"),
        "dynamodb",
        "dynamodb:UpdateItem",
        TABLE,
        ErrorCode.STATE_FAILED,
        True,
        1,
    ),
    (
        "429 without a known code",
        client_error("SlowDown", 429),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.QUEUE_THROTTLED,
        True,
        1,
    ),
    (
        "server error",
        client_error("InternalError", 500),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.QUEUE_FAILED,
        True,
        1,
    ),
    (
        "refused request",
        client_error("ValidationException", 400, "PutItem"),
        "dynamodb",
        "dynamodb:PutItem",
        TABLE,
        ErrorCode.STATE_FAILED,
        False,
        1,
    ),
    (
        "unknown key id",
        client_error("UnrecognizedClientException", 400, "GetItem"),
        "dynamodb",
        "dynamodb:GetItem",
        TABLE,
        ErrorCode.CREDENTIALS_INVALID,
        False,
        2,
    ),
    (
        "expired token",
        client_error("ExpiredToken", 403),
        "sqs",
        "sqs:ReceiveMessage",
        QUEUE,
        ErrorCode.CREDENTIALS_INVALID,
        False,
        2,
    ),
    (
        "no credentials",
        NoCredentialsError(),
        "sqs",
        "sqs:ReceiveMessage",
        QUEUE,
        ErrorCode.CREDENTIALS_MISSING,
        False,
        2,
    ),
    (
        "no region",
        NoRegionError(),
        "dynamodb",
        "dynamodb:GetItem",
        TABLE,
        ErrorCode.CREDENTIALS_MISSING,
        False,
        2,
    ),
    (
        "half a key pair",
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.CREDENTIALS_INVALID,
        False,
        2,
    ),
    (
        "endpoint unreachable",
        EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com/"),
        "sqs",
        "sqs:SendMessage",
        QUEUE,
        ErrorCode.QUEUE_UNREACHABLE,
        True,
        1,
    ),
    (
        "connect timeout",
        ConnectTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com/"),
        "sqs",
        "sqs:ReceiveMessage",
        QUEUE,
        ErrorCode.QUEUE_UNREACHABLE,
        True,
        1,
    ),
    (
        "read timeout",
        ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/"),
        "dynamodb",
        "dynamodb:GetItem",
        TABLE,
        ErrorCode.STATE_FAILED,
        True,
        1,
    ),
    (
        "unreadable answer",
        ResponseParserError("Unable to parse response (not well-formed)"),
        "sqs",
        "sqs:GetQueueAttributes",
        QUEUE,
        ErrorCode.QUEUE_FAILED,
        True,
        1,
    ),
]


@pytest.mark.parametrize(
    ("exc", "service", "action", "resource", "code", "retryable", "exit_code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_failure_gets_its_code_retry_and_exit_code(
    exc: BaseException,
    service: str,
    action: str,
    resource: str,
    code: ErrorCode,
    retryable: bool,
    exit_code: int,
) -> None:
    failure = classify(exc, service=service, action=action, resource=resource)

    assert (failure.code, failure.retryable, failure.exit_code) == (code, retryable, exit_code)
    assert "\n" not in failure.message
    assert resource in failure.message and action in failure.message
    # What retrying cannot mend is exactly what the worker stops on at once.
    assert is_unfixable(failure.code) == (failure.code in UNFIXABLE_CODES)
    if failure.code in UNFIXABLE_CODES:
        assert not failure.retryable


def test_the_unfixable_codes_are_the_missing_resources_and_refused_callers() -> None:
    assert {
        ErrorCode.QUEUE_NOT_FOUND,
        ErrorCode.STATE_NOT_FOUND,
        ErrorCode.ACCESS_DENIED,
        ErrorCode.CREDENTIALS_MISSING,
        ErrorCode.CREDENTIALS_INVALID,
    } == UNFIXABLE_CODES
    assert not is_unfixable(ErrorCode.QUEUE_THROTTLED)
    assert not is_unfixable(ErrorCode.QUEUE_UNREACHABLE)


def test_messages_name_the_resource_its_kind_and_the_action() -> None:
    denied = classify(
        client_error("AccessDenied", 403, "ReceiveMessage"),
        service="sqs",
        action="sqs:ReceiveMessage",
        resource=QUEUE,
    )
    assert denied.message == (
        f"access denied: sqs:ReceiveMessage on {QUEUE} (AccessDenied: first line second line)"
    )
    missing = classify(
        client_error("ResourceNotFoundException", 400, "GetItem"),
        service="dynamodb",
        action="dynamodb:GetItem",
        resource=TABLE,
    )
    assert missing.message.startswith(f"DynamoDB table {TABLE} does not exist (dynamodb:GetItem")
    parameter = classify(
        client_error("ParameterNotFound", 400, "GetParameter"),
        service="ssm",
        action="ssm:GetParameter",
        resource=PARAMETER,
    )
    assert parameter.message.startswith(f"SSM parameter {PARAMETER} not found")


def test_without_a_resource_the_operation_names_the_call() -> None:
    failure = classify(client_error("KmsInvalidState", 400, "GetCallerIdentity"), service="aws")
    assert (
        failure.message == "AWS GetCallerIdentity failed: KmsInvalidState: first line second line"
    )
    assert failure.code is ErrorCode.AWS_FAILED
    assert classify(NoCredentialsError(), service="aws").message.startswith(
        "no AWS credentials found (set a profile"
    )
    assert classify(ResponseParserError("bad"), service="aws").message == (
        "AWS call failed: the AWS endpoint sent a response botocore cannot read"
    )
    # A botocore failure that is neither an answer nor a known transport failure.
    waited = classify(WaiterError("table_exists", "Max attempts exceeded", {}), service="aws")
    assert (waited.code, waited.retryable) == (ErrorCode.AWS_FAILED, True)


def test_the_category_needs_no_context_and_builds_no_exception() -> None:
    # The access check asks only what kind of answer it got.
    assert category(client_error("403", 403)) is Category.ACCESS_DENIED
    assert category(client_error("QueueDoesNotExist", 400)) is Category.NOT_FOUND
    assert category(ResponseParserError("bad")) is Category.UNREADABLE
    assert category(ValueError("not botocore")) is Category.FAILED
    xml = ClientError(
        {
            "Error": {
                "Code": "403",
                "Message": "<ErrorResponse><Error><Code>AccessDenied</Code>\n"
                "<Message>not allowed</Message></Error></ErrorResponse>",
            },
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "GetQueueAttributes",
    )
    assert error_detail(xml) == ("AccessDenied", "not allowed")
    assert category(xml) is Category.ACCESS_DENIED


def test_a_failure_becomes_the_adapters_error_with_its_exit_code() -> None:
    missing = classify(
        NoCredentialsError(), service="sqs", action="sqs:SendMessage", resource=QUEUE
    )
    error = missing.error(QueueError)
    assert isinstance(error, QueueError)
    assert (error.code, error.exit_code, str(error)) == (
        ErrorCode.CREDENTIALS_MISSING,
        2,
        missing.message,
    )
    table = classify(
        client_error("ResourceNotFoundException", 400, "GetItem"),
        service="dynamodb",
        action="dynamodb:GetItem",
        resource=TABLE,
    ).error(StateError)
    assert (table.code, table.exit_code) == (ErrorCode.STATE_NOT_FOUND, 1)


# ---------------------------------------------------------------- the worker


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_worker_on_a_state_table_that_does_not_exist_stops_at_once(
    runner: CliRunner, isolated: Path
) -> None:
    db = isolated / "queue.db"
    queue = SqliteQueue(db)
    envelope = Envelope.new(
        cron="clientDepositUpdate",
        run_id="run-1",
        key="clientDepositUpdate:run-1:0",
        payload={"deposit_id": "D-1", "amount": "1.50", "currency": "USD"},
    )
    assert queue.send_batch([envelope.to_message("run-1-0")]).sent == [0]
    queue.close()
    config = isolated / "raasctl.yaml"
    config.write_text(
        json.dumps(
            {
                "default_env": "work-uat",
                "environments": {
                    "work-uat": {
                        "aws": {"region": "us-east-1"},
                        "queue": {"kind": "sqlite", "path": str(db)},
                        "state": {"kind": "dynamodb", "table": "raasctl-nowhere"},
                        "sink": {"kind": "sqlite", "path": str(isolated / "ledger.db")},
                    }
                },
            }
        )
    )
    began = time.monotonic()

    with mock_aws():
        result = runner.invoke(main, ["--config", str(config), "worker", "--until-empty"])

    assert time.monotonic() - began < 5
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    lines = _json_lines(result.stderr)
    assert lines[-1]["code"] == "RAAS_STATE_NOT_FOUND"
    assert "raasctl-nowhere" in lines[-1]["msg"] and "state create-table" in lines[-1]["msg"]
    assert not any("retrying" in json.dumps(line) for line in lines)
