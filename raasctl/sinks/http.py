"""The deployed sink: POST each entry to the accounting service's callback.

`POST <base_url>/<cron>` with the payload as the JSON body and `Idempotency-Key: <key>`, so
the service can drop a repeat delivery (answered 409, which counts as applied). The sink
never retries by itself: a retryable failure goes back to the worker, whose backoff through
the queue's visibility timeout spaces the next attempt and whose receive count bounds them.

It speaks through `http_wire`: each worker slot keeps one connection open, and a call costs
about a seventh of the CPU urllib3's pool took (requests took three times that again). The
environment's proxy and CA bundle settings, the ones requests honours (HTTPS_PROXY,
NO_PROXY, REQUESTS_CA_BUNDLE, ...), are read once, when the sink is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import certifi

from raasctl import __version__
from raasctl.codes import ErrorCode, InfoCode
from raasctl.envelope import Envelope, canonical_json
from raasctl.errors import ConfigError, SinkError
from raasctl.http_wire import (
    Answer,
    Origin,
    WireError,
    WireTimeout,
    proxy_for,
)
from raasctl.logs import event
from raasctl.redaction import register_secret, shorten
from raasctl.sinks.base import Applied, Sink

CONNECT_TIMEOUT_S = 10.0
RETRYABLE_STATUSES = frozenset({408, 429})  # plus every 5xx
ALREADY_APPLIED_STATUS = 409
BODY_EXCERPT_CHARS = 200
DEFAULT_MAX_RETRY_AFTER_S = 900.0


def ca_bundle() -> str:
    """The CA bundle the environment names, or certifi's, as requests would."""
    return (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpSink(Sink):
    """`token` is the resolved secret; it is sent only in the Authorization header and is
    scrubbed from every error message."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        register_secret(token)
        self.max_retry_after_s = max_retry_after_s
        self.timeout_s = timeout_s
        try:
            proxy = proxy_for(self.base_url)
        except ValueError as exc:
            raise ConfigError(f"the environment's proxy for {self.base_url}: {exc}") from None
        try:
            self.origin = Origin(
                self.base_url,
                connect_timeout_s=min(CONNECT_TIMEOUT_S, timeout_s),
                timeout_s=timeout_s,
                ca_file=ca_bundle(),
                proxy=proxy,
            )
        except ValueError as exc:
            raise ConfigError(f"sink.base_url: {exc}") from None
        except OSError as exc:  # the CA bundle cannot be read
            raise ConfigError(f"the CA bundle {ca_bundle()}: {exc.strerror or exc}") from None
        # A request line is ASCII: the base path as the URL has it, anything else encoded.
        self._path = quote(urlsplit(self.base_url).path, safe="/%:@!$&'()*+,;=~")
        try:  # the headers every call sends, checked once
            self._headers = _header_lines(
                {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": f"raasctl/{__version__}",
                }
            )
        except ValueError:
            raise ConfigError(
                "sink.token: the token has a line break or a character an HTTP header cannot carry"
            ) from None

    def connect(self) -> None:
        # A TCP (and TLS) handshake the first call then does not wait for; when it fails,
        # the first apply tries again and says what failed.
        with contextlib.suppress(WireError):
            self.origin.connect()

    def apply(self, envelope: Envelope) -> Applied:
        cron = quote(envelope.cron, safe="")
        path = f"{self._path}/{cron}"
        where = f"POST {self.base_url}/{cron} (entry {envelope.key})"
        try:
            headers = self._headers + _header_lines(
                {
                    "Idempotency-Key": _header_value(envelope.key),
                    "X-Raasctl-Run-Id": _header_value(envelope.run_id),
                    # The record's version: the accounting service can refuse an older one too.
                    **({"X-Raasctl-Version": envelope.version} if envelope.version else {}),
                }
            )
            body = canonical_json(envelope.payload).encode()
        except ValueError as exc:
            # A header no HTTP request can carry: no later attempt will do better.
            raise self._error(f"{where}: {exc}", False) from None
        try:
            response = self.origin.post(path, headers, body)
        except WireTimeout as exc:
            raise self._error(f"{where}: {exc}", True) from None
        except WireError as exc:
            raise self._error(f"{where}: connection failed: {exc}", True) from None

        status = response.status
        if 200 <= status < 300:
            return Applied.APPLIED
        if status == ALREADY_APPLIED_STATUS:
            return Applied.ALREADY_APPLIED
        if 300 <= status < 400:
            # A moved callback would send every entry to the DLQ: stop instead, so an
            # operator fixes sink.base_url and the messages wait in the queue.
            location = _without_query(response.headers.get("location", ""))
            raise SinkError(
                f"{where}: HTTP {status} redirect to {location or '(no Location)'}; the "
                "callback has moved: check the sink's base_url",
                retryable=True,
                stops_worker=True,
                code=ErrorCode.SINK_REDIRECT,
            )
        message = f"{where}: HTTP {status} {response.reason}{self._excerpt(response)}"
        if status in RETRYABLE_STATUSES or status >= 500:
            retry_after = self._retry_after(response, where)
            raise self._error(message, True, retry_after)
        raise self._error(message, False)

    def _retry_after(self, response: Answer, where: str) -> float | None:
        asked = parse_retry_after(response.headers.get("retry-after"))
        if asked is None or asked <= self.max_retry_after_s:
            return asked
        event(
            InfoCode.RETRY_AFTER_CAPPED,
            f"{where}: Retry-After {asked:g} s cut to max_retry_after_s "
            f"({self.max_retry_after_s:g} s)",
            level=logging.WARNING,
            asked_s=asked,
            capped_s=self.max_retry_after_s,
        )
        return self.max_retry_after_s

    def close(self) -> None:
        self.origin.close()

    def _excerpt(self, response: Answer) -> str:
        # Scrubbed before it is cut, so no piece of an echoed token survives the cut.
        body = response.body[: BODY_EXCERPT_CHARS * 16].decode("utf-8", errors="replace")
        text = re.sub(r"\s+", " ", body[: BODY_EXCERPT_CHARS * 4]).strip()
        return f": {shorten(text, BODY_EXCERPT_CHARS)}" if text else ""

    def _error(
        self, message: str, retryable: bool, retry_after_s: float | None = None
    ) -> SinkError:
        # A server may echo the request (headers included) in its error body: SinkError
        # scrubs every registered secret, the token among them.
        return SinkError(message, retryable=retryable, retry_after_s=retry_after_s)


def _header_lines(headers: dict[str, str]) -> str:
    """`Name: value` lines, each ended by CRLF; a value with a line break or a character
    outside Latin-1 is refused (ValueError), as http.client would."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value or not value.isprintable():
            raise ValueError(f"the {name} header's value is not printable")
        value.encode("latin-1")  # UnicodeEncodeError is a ValueError
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def _without_query(url: str) -> str:
    """A Location without its query and fragment: a login page's may carry credentials."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _header_value(value: str) -> str:
    """HTTP header values must be Latin-1; entity ids from a report may not be."""
    return value if value.isascii() and value.isprintable() else quote(value, safe="")
