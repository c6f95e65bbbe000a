"""SQS's JSON protocol for the worker's two calls a batch, without botocore's request machinery.

A worker makes two SQS calls for every ten messages: ReceiveMessage and DeleteMessageBatch.
Through a botocore client each costs about 1 ms of CPU (events, parameter validation, endpoint
rules, urllib3, a parser driven by the service model): more than the worker's own work on the
ten messages. `SqsWire` sends the same requests itself:
- the JSON body and headers SQS documents for its JSON protocol, signed as botocore's SigV4Auth
  signs them (raasctl/sigv4.py, at an eighth of its CPU) with the client's credentials
  (refreshed as the client would refresh them);
- over raasctl's HTTP/1.1 client (raasctl/http_wire.py): a keep-alive connection a thread, TLS
  verified against the CA bundle botocore uses, a proxy from the environment as botocore
  reads it;
- retried as the client retries: each failure is put to the client's own retry handler (its
  `needs-retry` event: standard or legacy mode, its attempts, its backoff and, in standard
  mode, the retry quota the client's own calls draw on), and each success is told to its
  `after-call` handlers (the quota gets its share back).

It answers with the dictionaries botocore returns, and fails with the exceptions botocore
raises (`ClientError` with the same error code, an `EndpointConnectionError`), so SqsQueue and
the error classifier cannot tell the two apart. A handler on the client's `before-send` event
(moto's in-process mock, say) is asked first, as the client asks it, and its answer is taken.

`for_client` gives None, and SqsQueue keeps to the client, where the client is set up in a way
this does not follow: a protocol other than JSON (a botocore from before SQS's JSON protocol),
FIPS or dual-stack endpoints, proxies or a client certificate in the client's config, or a
proxy other than http://.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSPreparedRequest, HeadersDict
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.hooks import first_non_none_response
from botocore.parsers import ResponseParserError, ResponseParserFactory

from raasctl import __version__
from raasctl.http_wire import Answer, Origin, WireError, proxy_for
from raasctl.sigv4 import SigV4

# A receive brings at most ten messages of up to 1 MiB each; JSON may escape a body to six
# times its size. A longer answer is refused rather than cut.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class WireUnreachable(EndpointConnectionError):
    """No answer from SQS: the connection failed or the answer did not come in time."""

    fmt = "Could not reach the endpoint URL {endpoint_url!r}: {error}"


class SqsWire:
    """Signed JSON-protocol calls to one SQS endpoint (thread-safe)."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: Any,
        *,
        service_model: Any,
        events: Any,
        ca_file: str,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        proxy = proxy_for(endpoint_url)
        self.endpoint_url = endpoint_url
        self.credentials = credentials  # botocore Credentials: frozen anew for every request
        # The client's: its before-send hooks answer here too, its retry handler decides.
        self.events = events
        self.service_model = service_model
        # Errors are read by botocore's own parser for the protocol (they are rare).
        self._error_parser = ResponseParserFactory().create_parser(service_model.protocol)
        self.path = urlsplit(endpoint_url).path or "/"
        self.url = endpoint_url if endpoint_url.endswith(self.path) else endpoint_url + self.path
        self.signer = SigV4(self.url, region, "sqs")
        self.sleep: Callable[[float], None] = time.sleep
        self.origin = Origin(
            endpoint_url,
            connect_timeout_s=connect_timeout_s,
            timeout_s=read_timeout_s,
            ca_file=ca_file,
            proxy=proxy,
            max_body_bytes=MAX_ANSWER_BYTES,
        )

    @classmethod
    def for_client(cls, client: Any, credentials: Any, *, ca_file: str) -> SqsWire | None:
        """A wire that says what `client` would, or None where it cannot (see the module)."""
        meta = client.meta
        config = meta.config
        if (
            meta.service_model.protocol != "json"
            or credentials is None
            or config.use_fips_endpoint
            or config.use_dualstack_endpoint
            or config.proxies
            or config.client_cert
        ):
            return None
        try:
            return cls(
                meta.endpoint_url,
                meta.region_name,
                credentials,
                service_model=meta.service_model,
                events=meta.events,
                ca_file=ca_file,
                connect_timeout_s=float(config.connect_timeout),
                read_timeout_s=float(config.read_timeout),
            )
        except (ValueError, OSError):  # a URL it does not speak to, a CA bundle it cannot read
            return None

    def receive_message(self, **params: Any) -> dict[str, Any]:
        return self.call("ReceiveMessage", params)

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self.call("DeleteMessageBatch", params)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode()
        model = self.service_model.operation_model(operation)  # botocore caches it
        request_dict: dict[str, Any] = {"context": {}}  # one call's, as the client keeps it
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._send(operation, body)
            except WireError as exc:
                failure = WireUnreachable(endpoint_url=self.endpoint_url, error=exc)
                delay = self._retry_delay(model, attempt, request_dict, caught=failure)
                if delay is None:
                    raise failure from None
            else:
                response = _Response(self.url, answer)
                if 200 <= answer.status < 300:
                    parsed = _parsed(operation, answer)
                    self.events.emit(
                        f"after-call.sqs.{operation}",
                        http_response=response,
                        parsed=parsed,
                        model=model,
                        context=request_dict["context"],
                    )
                    return parsed
                error = self._error_response(model, response, attempt - 1)
                delay = self._retry_delay(model, attempt, request_dict, answer=(response, error))
                if delay is None:
                    raise ClientError(error, operation)
            self.sleep(delay)

    def _retry_delay(
        self,
        model: Any,
        attempt: int,
        request_dict: dict[str, Any],
        *,
        answer: tuple[_Response, dict[str, Any]] | None = None,
        caught: Exception | None = None,
    ) -> float | None:
        """The client's answer to whether this attempt's failure is retried: the seconds to
        wait first, or None. Its handler counts attempts, draws on its retry quota and notes
        in `answer`'s ResponseMetadata what stopped it, as for the client's own calls."""
        responses = self.events.emit(
            f"needs-retry.sqs.{model.name}",
            response=answer,
            endpoint=None,
            operation=model,
            attempts=attempt,
            caught_exception=caught,
            request_dict=request_dict,
        )
        delay = first_non_none_response(responses)
        if delay is None or delay is False:
            return None
        return float(delay)

    def _error_response(self, model: Any, response: _Response, retries: int) -> dict[str, Any]:
        """The error as the client parses it (what its ClientError carries): botocore's
        parser for the protocol, SQS's query-era codes and a proxy's page included."""
        error: dict[str, Any] = self._error_parser.parse(
            {
                "headers": response.headers,
                "status_code": response.status_code,
                "body": response.content,
                "context": {"operation_name": model.name},
            },
            model.output_shape,
        )
        error.setdefault("ResponseMetadata", {})["RetryAttempts"] = retries
        return error

    def close(self) -> None:
        self.origin.close()

    def _send(self, operation: str, body: bytes) -> Answer:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AmazonSQS.{operation}",
            "x-amzn-query-mode": "true",  # errors carry their query-era codes too
        }
        headers.update(self.signer.sign(self.credentials.get_frozen_credentials(), headers, body))
        # moto's in-process mock, or any hook that answers for SQS, answers here too.
        request = AWSPreparedRequest("POST", self.url, HeadersDict(headers), body, False, {})
        _, answered = self.events.emit_until_response(
            f"before-send.sqs.{operation}", request=request
        )
        if answered is not None:
            named = {name.lower(): value for name, value in answered.headers.items()}
            return Answer(answered.status_code, "", named, answered.content)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return self.origin.post(self.path, f"{lines}User-Agent: raasctl/{__version__}\r\n", body)


class _Response:
    """An answer as botocore's retry and after-call handlers read one."""

    def __init__(self, url: str, answer: Answer) -> None:
        self.url = url
        self.status_code = answer.status
        self.headers = HeadersDict(answer.headers)
        self.content = answer.body


def _json(operation: str, answer: Answer) -> Any:
    if not answer.body:
        return {}
    try:
        return json.loads(answer.body)
    except ValueError:
        raise ResponseParserError(
            f"{operation}: the answer (HTTP {answer.status}, {len(answer.body)} bytes) is not JSON"
        ) from None


def _parsed(operation: str, answer: Answer) -> dict[str, Any]:
    """The answer as botocore parses it: binary attribute values decoded to bytes."""
    parsed = _json(operation, answer)
    if not isinstance(parsed, dict):
        raise ResponseParserError(f"{operation}: the answer is not a JSON object")
    for message in parsed.get("Messages") or ():
        for value in (message.get("MessageAttributes") or {}).values():
            if "BinaryValue" in value:
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
    return parsed
