"""SqsWire: the worker's receives and deletes without botocore's request machinery.

Against moto's server it must answer as the botocore client answers; against a scripted
server on 127.0.0.1 it must sign as botocore signs, retry as botocore's standard mode
retries, and fail with the errors botocore raises. In-process (mock_aws) it must let moto's
botocore hook answer, as the client would, and never reach the network.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import boto3
import certifi
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError
from moto import mock_aws
from support import QuietHTTPServer

from raasctl.aws import _client_config
from raasctl.codes import ErrorCode
from raasctl.config import load_config
from raasctl.errors import QueueError
from raasctl.queues.base import OutgoingMessage
from raasctl.queues.sqs import SqsQueue, queue_error
from raasctl.queues.sqs_wire import SqsWire
from raasctl.redaction import redact
from raasctl.runtime import Runtime

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"


def client(endpoint: str | None = None, **config: Any) -> Any:
    return boto3.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET, region_name="us-east-1"
    ).client(
        "sqs",
        endpoint_url=endpoint,
        config=_client_config().merge(Config(**config)) if config else _client_config(),
    )


def wire_for(sqs: Any, credentials: Any = None) -> SqsWire:
    wire = SqsWire.for_client(
        sqs, credentials or Credentials("AKIDEXAMPLE", SECRET, TOKEN), ca_file=certifi.where()
    )
    assert wire is not None
    wire.sleep = lambda _: None
    return wire


# ------------------------------------------------------------------ as the client answers


def test_a_round_trip_over_the_wire_answers_as_the_client_does(moto_url: str) -> None:
    sqs = client(moto_url)
    url = sqs.create_queue(QueueName="wire-round-trip")["QueueUrl"]
    queue = SqsQueue(sqs, url, wire=wire_for(sqs), wait_time_s=0)
    sent = queue.send_batch(
        [OutgoingMessage(f"body-{n}", attributes={"run_id": "r1", "n": str(n)}) for n in range(25)]
    )
    assert len(sent.sent) == 25
    got = []
    while batch := queue.receive(10, wait_time_s=0):
        got.extend(batch)
        queue.delete([m.receipt_handle for m in batch])
    assert sorted(m.body for m in got) == sorted(f"body-{n}" for n in range(25))
    assert {m.attributes["n"] for m in got} == {str(n) for n in range(25)}
    assert all(m.receive_count == 1 for m in got)
    assert queue.depth().visible == 0 and queue.depth().in_flight == 0


def test_received_messages_are_the_dictionaries_botocore_gives(moto_url: str) -> None:
    sqs = client(moto_url)
    url = sqs.create_queue(QueueName="wire-same")["QueueUrl"]
    attributes = {
        "text": {"DataType": "String", "StringValue": "é ☃"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    }
    sqs.send_message(QueueUrl=url, MessageBody="same", MessageAttributes=attributes)
    asked = {
        "QueueUrl": url,
        "MaxNumberOfMessages": 1,
        "VisibilityTimeout": 0,
        "MessageAttributeNames": ["All"],
        "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
    }
    by_client = sqs.receive_message(**asked)["Messages"][0]
    by_wire = wire_for(sqs).call("ReceiveMessage", asked)["Messages"][0]
    for answer in (by_client, by_wire):
        answer.pop("ReceiptHandle")
        answer["Attributes"].pop("ApproximateReceiveCount")
    assert by_wire == by_client
    assert by_wire["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\xff"


def test_a_missing_queue_fails_with_the_clients_error(moto_url: str) -> None:
    sqs = client(moto_url)
    missing = f"{moto_url}/123456789012/no-such-queue"
    with pytest.raises(ClientError) as by_client:
        sqs.receive_message(QueueUrl=missing)
    with pytest.raises(ClientError) as by_wire:
        wire_for(sqs).call("ReceiveMessage", {"QueueUrl": missing})
    assert by_wire.value.response["Error"] == by_client.value.response["Error"]
    action = {"action": "sqs:ReceiveMessage", "queue": missing}
    assert str(queue_error(by_wire.value, **action)) == str(queue_error(by_client.value, **action))


def test_in_process_moto_answers_the_wire_as_it_answers_the_client() -> None:
    with mock_aws():
        sqs = client()  # the real endpoint, which moto's hook answers
        url = sqs.create_queue(QueueName="wire-mocked")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="mocked")
        wire = wire_for(sqs)
        wire.origin.post = None  # type: ignore[assignment, method-assign]  # any send fails
        queue = SqsQueue(sqs, url, wire=wire, wait_time_s=0)
        [message] = queue.receive(10, wait_time_s=0)
        queue.delete([message.receipt_handle])
        assert message.body == "mocked" and queue.receive(10, wait_time_s=0) == []


# ------------------------------------------------------------------ a scripted SQS


class Scripted:
    """A server on 127.0.0.1 answering each request with the next (status, headers, body)."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.seen: list[tuple[dict[str, str], bytes]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                script.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, answer = script.answers[min(len(script.seen), len(answers)) - 1]
                self.send_response(status)
                for name, value in {"Content-Length": str(len(answer)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(*answers: tuple[int, dict[str, str], bytes]) -> Scripted:
        servers.append(Scripted(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


Answer = tuple[int, dict[str, str], bytes]
OK: Answer = (200, {}, b'{"Messages":[]}')
THROTTLED: Answer = (
    400,
    {"x-amzn-query-error": "AWS.SimpleQueueService.RequestThrottled;Sender"},
    b'{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}',
)
UNAVAILABLE: Answer = (503, {}, b"<html>busy</html>")


def test_a_request_is_signed_as_botocore_signs_it(scripted: Callable[..., Scripted]) -> None:
    server = scripted(OK)
    wire_for(client(server.url)).call("ReceiveMessage", {"QueueUrl": f"{server.url}/1/q"})
    [(headers, body)] = server.seen
    assert headers["x-amz-target"] == "AmazonSQS.ReceiveMessage"
    assert headers["content-type"] == "application/x-amz-json-1.0"
    assert json.loads(body) == {"QueueUrl": f"{server.url}/1/q"}
    # botocore's own signer, given what arrived, must come to the same signature.
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={name: headers[name] for name in signed if name != "host"},
    )
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials("AKIDEXAMPLE", SECRET, TOKEN), "sqs", "us-east-1")
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    assert headers["authorization"].endswith(f"Signature={expected}")
    assert headers["x-amz-security-token"] == TOKEN
    assert SECRET not in json.dumps(headers)


def test_credentials_are_read_again_for_every_request(scripted: Callable[..., Scripted]) -> None:
    server = scripted(OK)

    class Rotating:
        keys = iter(["AKIAFIRST", "AKIASECOND"])

        def get_frozen_credentials(self) -> Credentials:
            return Credentials(next(self.keys), SECRET)

    wire = wire_for(client(server.url), Rotating())
    for _ in range(2):
        wire.call("ReceiveMessage", {"QueueUrl": "q"})
    keys = [h["authorization"].split("Credential=")[1].split("/")[0] for h, _ in server.seen]
    assert keys == ["AKIAFIRST", "AKIASECOND"]


# Throttling as botocore knows it (its code among botocore's throttling codes).
THROTTLED_KNOWN: Answer = (
    400,
    {"x-amzn-query-error": "RequestThrottled;Sender"},
    b'{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}',
)


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        call()
    except ClientError as exc:
        return (exc.response["Error"]["Code"], str(exc))
    return ("ok", "")


@pytest.mark.parametrize(
    "answers",
    [
        (THROTTLED_KNOWN, UNAVAILABLE, OK),
        (UNAVAILABLE,),  # every attempt
        (THROTTLED, OK),  # a code this botocore does not retry
        ((500, {}, b""), (502, {}, b"<html>bad gateway</html>"), OK),
        ((403, {}, b"refused by a proxy"),),  # not JSON: its text is the message
    ],
    ids=["throttled-then-busy", "always-busy", "unknown-code", "gateway-pages", "not-json"],
)
@pytest.mark.parametrize("mode", ["standard", "legacy"])
def test_the_wire_retries_and_fails_as_the_client_does(
    scripted: Callable[..., Scripted], answers: tuple[Answer, ...], mode: str
) -> None:
    # The client's own retry handler decides: the same attempts, the same end.
    def delete(via_wire: bool) -> tuple[int, tuple[str, str]]:
        server = scripted(*answers)
        sqs = client(server.url, retries={"mode": mode, "total_max_attempts": 3})
        params = {"QueueUrl": f"{server.url}/1/q", "Entries": []}
        if not via_wire:
            ended = outcome(lambda: sqs.delete_message_batch(**params))
            return len(server.seen), ended
        wire = wire_for(sqs)
        slept: list[float] = []
        wire.sleep = slept.append
        ended = outcome(lambda: wire.call("DeleteMessageBatch", params))
        assert len(slept) == len(server.seen) - 1  # a wait before every retry
        return len(server.seen), ended

    assert delete(via_wire=True) == delete(via_wire=False)


def test_the_wire_draws_on_the_retry_quota_of_the_clients_own_calls(
    scripted: Callable[..., Scripted],
) -> None:
    # Standard mode: once the client's failures have spent its retry quota, neither the
    # client nor the wire retries; an outage is not met with every attempt of every call.
    server = scripted(UNAVAILABLE)
    sqs = client(server.url, retries={"mode": "standard", "total_max_attempts": 2})
    params = {"QueueUrl": f"{server.url}/1/q", "Entries": []}
    for _ in range(200):
        before = len(server.seen)
        outcome(lambda: sqs.delete_message_batch(**params))
        if len(server.seen) - before == 1:
            break  # the quota is spent
    else:
        pytest.fail("the client's retry quota never ran out")
    wire = wire_for(sqs)
    before = len(server.seen)
    assert outcome(lambda: wire.call("DeleteMessageBatch", params))[0] == "503"
    assert len(server.seen) - before == 1


def test_retries_stop_at_the_clients_total_attempts(scripted: Callable[..., Scripted]) -> None:
    server = scripted(UNAVAILABLE)
    wire = wire_for(client(server.url, retries={"mode": "standard", "total_max_attempts": 3}))
    with pytest.raises(ClientError) as failed:
        wire.call("DeleteMessageBatch", {"QueueUrl": "q", "Entries": []})
    assert len(server.seen) == 3
    assert failed.value.response["Error"]["Code"] == "503"
    assert failed.value.response["ResponseMetadata"]["RetryAttempts"] == 2


def test_a_refusal_is_not_retried_and_keeps_its_query_code(
    scripted: Callable[..., Scripted],
) -> None:
    denied = (
        400,
        {"x-amzn-query-error": "AccessDenied;Sender", "x-amzn-requestid": "req-1"},
        b'{"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"}',
    )
    server = scripted(denied)
    with pytest.raises(ClientError) as failed:
        wire_for(client(server.url)).call("ReceiveMessage", {"QueueUrl": "q"})
    assert len(server.seen) == 1
    error = failed.value.response["Error"]
    assert (error["Code"], error["Type"], error["QueryErrorCode"]) == (
        "AccessDenied",
        "Sender",
        "AccessDeniedException",
    )
    assert failed.value.response["ResponseMetadata"]["RequestId"] == "req-1"
    problem = queue_error(failed.value, action="sqs:ReceiveMessage", queue="q")
    assert problem.code == ErrorCode.ACCESS_DENIED


def test_an_answer_that_is_not_json_is_unreadable(scripted: Callable[..., Scripted]) -> None:
    server = scripted((200, {}, b"<html>a captive portal</html>"))
    sqs = client(server.url)
    queue = SqsQueue(sqs, f"{server.url}/1/q", wire=wire_for(sqs), wait_time_s=0)
    with pytest.raises(QueueError) as failed:
        queue.receive(10, wait_time_s=0)
    assert "\n" not in str(failed.value) and "cannot read" in str(failed.value)
    assert isinstance(failed.value.__cause__, ResponseParserError)
    assert "is not JSON" in str(failed.value.__cause__)


def test_no_answer_is_one_unreachable_line_after_every_attempt() -> None:
    sqs = client("http://127.0.0.1:9", retries={"mode": "standard", "total_max_attempts": 2})
    wire = wire_for(sqs)
    slept: list[float] = []
    wire.sleep = slept.append
    queue = SqsQueue(sqs, "http://127.0.0.1:9/1/q", wire=wire, wait_time_s=0)
    with pytest.raises(QueueError) as failed:
        queue.receive(10, wait_time_s=0)
    assert len(slept) == 1
    assert isinstance(failed.value.__cause__, EndpointConnectionError)
    message = str(failed.value)
    assert "\n" not in message and "127.0.0.1:9" in message and SECRET not in message


# ------------------------------------------------------------------ where the client is kept


@pytest.mark.parametrize(
    "config",
    [
        {"use_fips_endpoint": True},
        {"use_dualstack_endpoint": True},
        {"proxies": {"https": "http://proxy.invalid:3128"}},
        {"client_cert": "/tmp/client.pem"},
    ],
)
def test_a_client_set_up_beyond_the_wire_keeps_its_own_requests(config: dict[str, Any]) -> None:
    sqs = client(**config)
    assert SqsWire.for_client(sqs, Credentials("AKIDEXAMPLE", SECRET), ca_file="x") is None


def test_no_credentials_or_another_protocol_keeps_the_client() -> None:
    sqs = client()
    assert SqsWire.for_client(sqs, None, ca_file="x") is None
    sqs.meta.service_model.metadata["protocol"] = "query"
    try:
        assert SqsWire.for_client(sqs, Credentials("AKIDEXAMPLE", SECRET), ca_file="x") is None
    finally:
        sqs.meta.service_model.metadata["protocol"] = "json"


def test_a_proxy_from_the_environment_carries_the_requests(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = scripted(OK)
    monkeypatch.setenv("HTTP_PROXY", f"http://ops:proxy-pass@127.0.0.1:{proxy.server.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    wire = wire_for(client("http://sqs.us-east-1.example"))
    assert wire.call("ReceiveMessage", {"QueueUrl": "q"}) == {"Messages": []}
    [(headers, _)] = proxy.seen
    assert headers["host"] == "sqs.us-east-1.example"
    assert headers["proxy-authorization"].startswith("Basic ")
    assert "proxy-pass" not in redact("the proxy said no to proxy-pass")


@pytest.mark.parametrize("wire", [True, False])
def test_the_queue_key_wire_chooses_how_the_worker_calls_go(tmp_path: Path, wire: bool) -> None:
    config_file = tmp_path / "raasctl.yaml"
    queue = {"kind": "sqs", "url": "https://sqs.us-east-1.amazonaws.com/123456789012/q"}
    environment = {
        "aws": {"region": "us-east-1"},
        "queue": {**queue, **({} if wire else {"wire": False})},
        "state": {"kind": "sqlite"},
        "sink": {"kind": "sqlite"},
    }
    config_file.write_text(json.dumps({"default_env": "e", "environments": {"e": environment}}))
    config = load_config(str(config_file)).config
    name, env = config.environment(None)
    runtime = Runtime(config, name, env)
    built = runtime.queue(wire=True)  # the worker's
    assert isinstance(built, SqsQueue)
    assert isinstance(built._hot, SqsWire) is wire
    built.close()
    other = runtime.queue()  # the producer's and the operator's commands keep to botocore
    assert isinstance(other, SqsQueue) and not isinstance(other._hot, SqsWire)
    other.close()
