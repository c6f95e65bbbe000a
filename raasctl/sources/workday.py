"""The deployed source: Workday Report as a Service over HTTPS (requests).

GET https://<host>/ccx/service/customreport2/<tenant>/<owner>/<report>?format=json with the
report's prompts as query parameters. Authentication is HTTP Basic for an integration system
user, or OAuth 2.0 with a refresh token (the access token is cached until shortly before it
expires, and refreshed once when Workday answers 401).

The retry loop is our own rather than urllib3's Retry: it must honour Retry-After, refresh an
OAuth token between attempts, log each retry with its code, and hand back a still-unread
streaming response so the report is parsed entry by entry as it arrives.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import requests
import urllib3
from requests.auth import AuthBase, HTTPBasicAuth

from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import BasicAuth, OAuthAuth
from raasctl.config import WorkdaySource as WorkdaySourceConfig
from raasctl.dates import prompt_params
from raasctl.errors import SourceError
from raasctl.logs import event
from raasctl.redaction import register_secret, shorten
from raasctl.sources.base import Prompts, ReportEntry, Source
from raasctl.sources.stream import CHUNK_BYTES, HEAD_BYTES, ReportStream, parse_entries

MAX_BACKOFF_S = 60.0
# Honour Retry-After, but a header asking for an hour must not stall a cron run silently.
MAX_RETRY_AFTER_S = 300.0
# Refresh an access token this long before Workday says it expires.
TOKEN_EXPIRY_MARGIN_S = 60.0
# Used when the token response has no expires_in.
DEFAULT_TOKEN_LIFETIME_S = 600.0
ERROR_DETAIL_CHARS = 300
# `doctor` asks once and gives up soon: it checks reachability, not patience.
PROBE_TIMEOUT_S = 30.0
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _basic(username: str, password: str) -> HTTPBasicAuth:
    """Basic auth whose header value is redacted too: an error page or a proxy that echoes
    the request headers must not show the base64 of user:password."""
    register_secret(base64.b64encode(f"{username}:{password}".encode()).decode())
    return HTTPBasicAuth(username, password)


class _BearerAuth(AuthBase):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


@dataclass
class _Token:
    value: str
    refresh_at: float  # on the source's clock


class WorkdaySource(Source):
    def __init__(
        self,
        config: WorkdaySourceConfig,
        secret: Callable[[str], str],
        *,
        session: requests.Session | None = None,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._secret = secret
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._clock = clock
        self._token: _Token | None = None
        self._refresh_token: str | None = None
        self._token_lock = threading.Lock()

    # ------------------------------------------------------------ public

    def report_url(self, report: str) -> str:
        parts = (self.config.tenant, self.config.owner, report)
        path = "/".join(quote(part, safe="") for part in parts)
        return f"{self.config.base_url}/ccx/service/customreport2/{path}"

    @property
    def token_url(self) -> str:
        return f"{self.config.base_url}/ccx/oauth2/{quote(self.config.tenant, safe='')}/token"

    def entries(self, cron: str, report: str, prompts: Prompts) -> Iterator[ReportEntry]:
        return self._entries(report, prompts)

    def probe(self, report: str, prompts: Prompts) -> int:
        """One authenticated request for `report` whose body is never read (for `doctor`):
        the HTTP status, or SourceError (AUTH_FAILED when the credentials are refused)."""
        deadline = self._clock() + PROBE_TIMEOUT_S
        response = self._open_report(report, prompts, deadline)
        response.close()
        return response.status_code

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    # ------------------------------------------------------------ report

    def _entries(self, report: str, prompts: Prompts) -> Iterator[ReportEntry]:
        where = f"Workday report {report}"
        deadline = self._clock() + self.config.fetch_timeout_s
        response = self._open_report(report, prompts, deadline)
        count = 0
        try:
            stream = ReportStream(self._body(response, report, deadline))
            if stream.first_byte() == b"<":
                # Asked for JSON, got markup: Workday reports some failures as a SOAP fault,
                # and a proxy in the way answers with an HTML page.
                body = stream.read_head(HEAD_BYTES)
                fault = soap_fault_text(body)
                what = f"a SOAP fault: {fault}" if fault else f"markup: {markup_text(body)}"
                raise SourceError(
                    f"{where} returned {what} (expected JSON)",
                    code=ErrorCode.REPORT_INVALID,
                )
            for entry in parse_entries(stream, where=where):
                count += 1
                yield entry
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            if self._clock() >= deadline:
                raise self._timed_out(report) from None
            raise SourceError(
                f"connection to Workday lost while reading report {report} after {count} "
                f"entries: {describe_transport_error(exc)}",
                code=ErrorCode.SOURCE_FAILED,
            ) from None
        finally:
            response.close()

    def _body(self, response: requests.Response, report: str, deadline: float) -> Iterator[bytes]:
        """The body as it arrives, and never past the deadline: `read1` returns after one
        receive, so a server sending a byte at a time is noticed as soon as time is up (a
        silent one by the read timeout, which is capped to the time left)."""
        while True:
            if self._clock() >= deadline:
                raise self._timed_out(report)
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
            if not chunk:
                return
            yield chunk

    def _timed_out(self, report: str) -> SourceError:
        return SourceError(
            f"Workday report {report} did not arrive within fetch_timeout_s "
            f"({self.config.fetch_timeout_s:g} s)",
            code=ErrorCode.SOURCE_TIMEOUT,
        )

    def _open_report(self, report: str, prompts: Prompts, deadline: float) -> requests.Response:
        url = self.report_url(report)
        params = {"format": "json", **prompt_params(prompts)}
        what = f"report {report}"
        response = self._request("GET", url, what, params=params, stream=True, deadline=deadline)
        if response.status_code == 401 and isinstance(self.config.auth, OAuthAuth):
            # The cached token may have been revoked or expired early: refresh once, retry once.
            response.close()
            with self._token_lock:
                self._token = None
            response = self._request(
                "GET", url, what, params=params, stream=True, deadline=deadline
            )
        if response.status_code < 300:
            return response
        detail = error_detail(response)
        response.close()
        if response.status_code in (401, 403):
            raise SourceError(
                f"Workday refused the credentials for {what} "
                f"(HTTP {response.status_code}, {self.config.auth.kind} auth): {detail}",
                code=ErrorCode.AUTH_FAILED,
            )
        raise SourceError(
            f"Workday {what} failed with HTTP {response.status_code}: {detail}",
            code=ErrorCode.SOURCE_FAILED,
        )

    def _auth(self) -> AuthBase:
        auth = self.config.auth
        if isinstance(auth, BasicAuth):
            return _basic(self._resolve(auth.username), self._secret_value(auth.password))
        return _BearerAuth(self._access_token())

    def _resolve(self, value: str) -> str:
        # Usernames and client ids may be written plainly; everything else is a reference.
        return self._secret(value) if value.startswith(("env:", "ssm:")) else value

    def _secret_value(self, value: str) -> str:
        """A password, client secret or refresh token: scrubbed from every output, whoever
        resolved it."""
        resolved = self._resolve(value)
        register_secret(resolved)
        return resolved

    # ------------------------------------------------------------ OAuth

    def _access_token(self) -> str:
        with self._token_lock:
            if self._token is None or self._clock() >= self._token.refresh_at:
                self._token = self._fetch_token()
            return self._token.value

    def _fetch_token(self) -> _Token:
        auth = self.config.auth
        assert isinstance(auth, OAuthAuth)
        if self._refresh_token is None:
            self._refresh_token = self._secret_value(auth.refresh_token)
        client = _basic(self._resolve(auth.client_id), self._secret_value(auth.client_secret))
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        response = self._request(
            "POST", self.token_url, "the OAuth token", data=form, auth=client, authorize=False
        )
        try:
            if response.status_code >= 300:
                raise SourceError(
                    f"Workday refused the OAuth refresh token (HTTP {response.status_code}): "
                    f"{error_detail(response)}",
                    code=ErrorCode.AUTH_FAILED,
                )
            try:
                document = response.json()
            except ValueError:
                document = None
        finally:
            response.close()
        token = document.get("access_token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError(
                "Workday's OAuth token response has no access_token", code=ErrorCode.AUTH_FAILED
            )
        register_secret(token)
        rotated = document.get("refresh_token") if isinstance(document, dict) else None
        if isinstance(rotated, str) and rotated:
            register_secret(rotated)
            self._refresh_token = rotated
        lifetime = _number(document.get("expires_in")) or DEFAULT_TOKEN_LIFETIME_S
        margin = min(TOKEN_EXPIRY_MARGIN_S, lifetime / 10)
        return _Token(token, self._clock() + lifetime - margin)

    # ------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        authorize: bool = True,
        deadline: float = math.inf,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries on connection errors, timeouts, 429 and 5xx, all within
        `deadline` (then SourceError SOURCE_TIMEOUT).

        Returns any other response (2xx, 4xx) unread; raises SourceError once retries are
        spent. `authorize` adds the report's credentials, fresh for every attempt.
        """
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            left = deadline - self._clock()
            if left <= 0:
                raise self._timed_out(what.removeprefix("report "))
            timeout = (
                min(self.config.connect_timeout_s, left),
                min(self.config.read_timeout_s, left),
            )
            if authorize:
                kwargs["auth"] = self._auth()
            try:
                response = self._session.request(
                    method, url, timeout=timeout, headers={"Accept": "application/json"}, **kwargs
                )
            except requests.RequestException as exc:
                reason = describe_transport_error(exc)
                if not _transient(exc):
                    raise SourceError(
                        f"cannot call Workday for {what}: {reason}", code=ErrorCode.SOURCE_FAILED
                    ) from None
                if attempt == attempts:
                    raise SourceError(
                        f"cannot reach Workday for {what} after {attempt} attempts: {reason}",
                        code=ErrorCode.SOURCE_FAILED,
                    ) from None
                self._wait(what, attempt, reason, retry_after=None, deadline=deadline)
                continue
            status = response.status_code
            if status != 429 and status < 500:
                return response
            detail = error_detail(response)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            if attempt == attempts:
                raise SourceError(
                    f"Workday {what} failed with HTTP {status} after {attempt} attempts: {detail}",
                    code=ErrorCode.SOURCE_FAILED,
                )
            self._wait(
                what,
                attempt,
                f"HTTP {status}: {detail}",
                retry_after=retry_after,
                deadline=deadline,
            )
        raise AssertionError("unreachable: the loop returns or raises")

    def _wait(
        self,
        what: str,
        attempt: int,
        reason: str,
        *,
        retry_after: float | None,
        deadline: float = math.inf,
    ) -> None:
        if retry_after is not None:
            delay = min(retry_after, MAX_RETRY_AFTER_S)
        else:
            delay = min(self._backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
        if self._clock() + delay >= deadline:  # waiting would outlast the fetch
            raise self._timed_out(what.removeprefix("report "))
        event(
            InfoCode.HTTP_RETRY,
            f"Workday {what}: {reason}; retrying in {delay:g} s",
            level=logging.WARNING,
            attempt=attempt,
            delay_s=delay,
        )
        self._sleep(delay)


# ---------------------------------------------------------------- helpers


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _transient(exc: requests.RequestException) -> bool:
    """Worth another attempt: the network, not our request or a certificate, failed."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (`120`) or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def describe_transport_error(exc: Exception) -> str:
    """A short reason, never the URL or headers: `ReadTimeout (timed out)`, `[Errno 111] ...`."""
    kind = type(exc).__name__
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return f"{kind} (timed out)"
    match = _ERRNO.search(str(exc))
    return f"{kind} ({match.group(0).strip()})" if match else kind


def _one_line(text: str, limit: int = ERROR_DETAIL_CHARS) -> str:
    """One line, scrubbed of secrets before it is cut to `limit`."""
    return shorten(" ".join(text.split()), limit)


def soap_fault_text(body: bytes) -> str | None:
    """The faultstring of a SOAP fault (or Workday's validation message), if the body has one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        # A cut-off body: a regular expression still finds a complete faultstring.
        match = re.search(rb"<(?:\w+:)?faultstring[^>]*>(.*?)</(?:\w+:)?faultstring>", body, re.S)
        return _one_line(match.group(1).decode("utf-8", "replace")) if match else None
    wanted = ("faultstring", "Text", "Message")  # SOAP 1.1, SOAP 1.2 Reason/Text, Workday
    found: dict[str, str] = {}
    for element in root.iter():
        name = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        if name in wanted and name not in found and element.text and element.text.strip():
            found[name] = element.text
    for name in wanted:
        if name in found:
            return _one_line(found[name])
    return None


def error_detail(response: requests.Response) -> str:
    """What went wrong, from an error response's body: a SOAP faultstring, a JSON error, or
    the start of the text. Reads at most HEAD_BYTES of it."""
    try:
        body = b""
        for chunk in response.iter_content(CHUNK_BYTES):
            body += chunk
            if len(body) >= HEAD_BYTES:
                break
    except requests.RequestException as exc:
        return f"(body unreadable: {describe_transport_error(exc)})"
    text = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        fault = soap_fault_text(text)
        if fault:
            return fault
    elif text.startswith(b"{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            parts = [
                str(document[key])
                for key in ("error", "error_description", "message", "faultstring")
                if document.get(key)
            ]
            if parts:
                return _one_line(": ".join(parts))
    if not text:
        return response.reason or "no body"
    if text.startswith(b"<"):
        return markup_text(text)
    return _one_line(text.decode("utf-8", "replace"))


def markup_text(body: bytes) -> str:
    """The words of an XML or HTML body (an error page), without its tags, on one line."""
    text = re.sub(rb"<(script|style)\b.*?</\1>", b" ", body, flags=re.S | re.I)
    text = re.sub(rb"<[^>]*>", b" ", text)
    return _one_line(text.decode("utf-8", "replace")) or "(no text)"
