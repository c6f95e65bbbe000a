"""The deployed sink: POST each entry to the accounting service's callback.

`POST <base_url>/<cron>` with the payload as the JSON body and `Idempotency-Key: <key>`, so
the service can drop a repeat delivery (answered 409, which counts as applied). The sink
never retries by itself: a retryable failure goes back to the worker, whose backoff through
the queue's visibility timeout spaces the next attempt and whose receive count bounds them.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from raasctl import __version__
from raasctl.codes import ErrorCode, InfoCode
from raasctl.envelope import Envelope, canonical_json
from raasctl.errors import SinkError
from raasctl.logs import event
from raasctl.redaction import register_secret, shorten
from raasctl.sinks.base import Applied, Sink

POOL_SIZE = 64  # connections kept per host: enough for every worker slot to hold one
CONNECT_TIMEOUT_S = 10.0
RETRYABLE_STATUSES = frozenset({408, 429})  # plus every 5xx
ALREADY_APPLIED_STATUS = 409
BODY_EXCERPT_CHARS = 200
DEFAULT_MAX_RETRY_AFTER_S = 900.0


def new_session(pool_size: int = POOL_SIZE) -> requests.Session:
    session = requests.Session()
    # requests' default pool keeps 10 connections per host; with more worker threads the
    # rest would open and drop a connection (and a TLS handshake) per request.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


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
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        register_secret(token)
        self.max_retry_after_s = max_retry_after_s
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        self._own_session = session is None
        self.session = session if session is not None else new_session()

    def apply(self, envelope: Envelope) -> Applied:
        url = f"{self.base_url}/{quote(envelope.cron, safe='')}"
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Idempotency-Key": _header_value(envelope.key),
            "X-Raasctl-Run-Id": _header_value(envelope.run_id),
            # The record's version: the accounting service can refuse an older one too.
            **({"X-Raasctl-Version": envelope.version} if envelope.version else {}),
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"raasctl/{__version__}",
        }
        where = f"POST {url} (entry {envelope.key})"
        try:
            response = self.session.post(
                url,
                data=canonical_json(envelope.payload).encode(),
                headers=headers,
                timeout=self.timeout,
                # A redirected POST turns into a GET in requests; treat it as a failure.
                allow_redirects=False,
            )
        except requests.Timeout:
            raise self._error(f"{where}: timed out after {self.timeout[1]:g} s", True) from None
        except requests.ConnectionError as exc:
            raise self._error(f"{where}: connection failed: {_reason(exc)}", True) from None
        except requests.RequestException as exc:
            # An invalid URL or the like: no later attempt will do better.
            raise self._error(f"{where}: {_reason(exc)}", False) from None

        status = response.status_code
        if 200 <= status < 300:
            return Applied.APPLIED
        if status == ALREADY_APPLIED_STATUS:
            return Applied.ALREADY_APPLIED
        if 300 <= status < 400:
            # A moved callback would send every entry to the DLQ: stop instead, so an
            # operator fixes sink.base_url and the messages wait in the queue.
            location = _without_query(response.headers.get("Location", ""))
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

    def _retry_after(self, response: requests.Response, where: str) -> float | None:
        asked = parse_retry_after(response.headers.get("Retry-After"))
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
        if self._own_session:
            self.session.close()

    def _excerpt(self, response: requests.Response) -> str:
        # Scrubbed before it is cut, so no piece of an echoed token survives the cut.
        text = re.sub(r"\s+", " ", response.text[: BODY_EXCERPT_CHARS * 4]).strip()
        return f": {shorten(text, BODY_EXCERPT_CHARS)}" if text else ""

    def _error(
        self, message: str, retryable: bool, retry_after_s: float | None = None
    ) -> SinkError:
        # A server may echo the request (headers included) in its error body: SinkError
        # scrubs every registered secret, the token among them.
        return SinkError(message, retryable=retryable, retry_after_s=retry_after_s)


def _reason(exc: requests.RequestException) -> str:
    """urllib3's reason ("Failed to establish a new connection: ... refused") rather than its
    "Max retries exceeded" wrapper, which reads as if the sink had retried."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return shorten(str(reason or exc), BODY_EXCERPT_CHARS)


def _without_query(url: str) -> str:
    """A Location without its query and fragment: a login page's may carry credentials."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _header_value(value: str) -> str:
    """HTTP header values must be Latin-1; entity ids from a report may not be."""
    return value if value.isascii() and value.isprintable() else quote(value, safe="")
