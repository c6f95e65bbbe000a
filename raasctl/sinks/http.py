"""The deployed sink: POST each entry to the accounting service's callback.

`POST <base_url>/<cron>` with the payload as the JSON body and `Idempotency-Key: <key>`, so
the service can drop a repeat delivery (answered 409, which counts as applied). The sink
never retries by itself: a retryable failure goes back to the worker, whose backoff through
the queue's visibility timeout spaces the next attempt and whose receive count bounds them.

It speaks through urllib3's connection pool directly. requests (on the same pool) costs about
1.5 ms of CPU a call, half of it reading the whole environment for proxies on every request;
sixteen slots whose answers come back together then wait for each other's CPU, a gap that
held a drain at 94 % of its bound. Here the environment's proxy and CA bundle settings, the
ones requests honours (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ...), are read once, when
the sink is made, and a call costs about a third of that.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

import certifi
import urllib3
from requests.utils import get_environ_proxies, select_proxy
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, ProxyError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

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


def new_pool(base_url: str, pool_size: int = POOL_SIZE) -> urllib3.PoolManager:
    """Connections to `base_url`'s host, `pool_size` of them kept open (one for each worker
    slot), through the proxy the environment names for it, if any, and verified against the
    CA bundle the environment names, or certifi's, as requests would."""
    settings: dict[str, object] = {
        "maxsize": pool_size,
        "cert_reqs": "CERT_REQUIRED",
        "ca_certs": os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or certifi.where(),
    }
    proxy = select_proxy(base_url, get_environ_proxies(base_url))
    if not proxy:
        return urllib3.PoolManager(**settings)  # type: ignore[arg-type]
    auth = urllib3.util.parse_url(proxy).auth
    if auth:
        register_secret(unquote(auth).partition(":")[2])  # the proxy's password
    headers = urllib3.util.make_headers(proxy_basic_auth=unquote(auth)) if auth else None
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **settings)  # type: ignore[arg-type]


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
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        register_secret(token)
        self.max_retry_after_s = max_retry_after_s
        self.timeout_s = timeout_s
        self._timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, timeout_s), read=timeout_s)
        self._own_pool = pool is None
        self.pool = pool if pool is not None else new_pool(self.base_url)

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
            response = self.pool.urlopen(
                "POST",
                url,
                body=canonical_json(envelope.payload).encode(),
                headers=headers,
                timeout=self._timeout,
                # A redirect is a failure (below), and the sink never retries by itself.
                redirect=False,
                retries=False,
            )
        except (NewConnectionError, ProtocolError, ProxyError, SSLError) as exc:
            # (before the timeouts: a NewConnectionError is a ConnectTimeoutError by type)
            raise self._error(f"{where}: connection failed: {_reason(exc)}", True) from None
        except Urllib3Timeout:
            raise self._error(f"{where}: timed out after {self.timeout_s:g} s", True) from None
        except (HTTPError, ValueError) as exc:
            # An invalid URL or the like: no later attempt will do better.
            raise self._error(f"{where}: {_reason(exc)}", False) from None

        status = response.status
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

    def _retry_after(self, response: urllib3.BaseHTTPResponse, where: str) -> float | None:
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
        if self._own_pool:
            self.pool.clear()

    def _excerpt(self, response: urllib3.BaseHTTPResponse) -> str:
        # Scrubbed before it is cut, so no piece of an echoed token survives the cut.
        body = response.data[: BODY_EXCERPT_CHARS * 16].decode("utf-8", errors="replace")
        text = re.sub(r"\s+", " ", body[: BODY_EXCERPT_CHARS * 4]).strip()
        return f": {shorten(text, BODY_EXCERPT_CHARS)}" if text else ""

    def _error(
        self, message: str, retryable: bool, retry_after_s: float | None = None
    ) -> SinkError:
        # A server may echo the request (headers included) in its error body: SinkError
        # scrubs every registered secret, the token among them.
        return SinkError(message, retryable=retryable, retry_after_s=retry_after_s)


def _reason(exc: Exception) -> str:
    """What went wrong ("Failed to establish a new connection: [Errno 111] Connection
    refused"), without urllib3's description of its connection object."""
    if isinstance(exc, ProxyError) and isinstance(exc.original_error, Exception):
        # ("Unable to connect to proxy", NewConnectionError(...)) as one sentence
        return shorten(f"{exc.args[0]}: {_reason(exc.original_error)}", BODY_EXCERPT_CHARS)
    text = str(exc)
    if isinstance(exc, NewConnectionError) and ": " in text:
        text = text.split(": ", 1)[1]
    return shorten(text, BODY_EXCERPT_CHARS)


def _without_query(url: str) -> str:
    """A Location without its query and fragment: a login page's may carry credentials."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _header_value(value: str) -> str:
    """HTTP header values must be Latin-1; entity ids from a report may not be."""
    return value if value.isascii() and value.isprintable() else quote(value, safe="")
