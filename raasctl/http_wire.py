"""HTTP/1.1 for the HTTP sink and SQS: one keep-alive connection a thread, a request in one write.

Both send one kind of request (a POST with a JSON body) to one origin, so the general
clients' machinery is mostly cost here: urllib3 spends about 0.45 ms of CPU a call, and
http.client about 0.16 ms, most of it header validation and email-style header parsing.
Sixteen slots whose answers come back together wait for each other's CPU, and that wait is
what held a drain under its bound. This client writes the request in one piece and reads the
answer with a few byte operations, about 60 µs a call.

What it speaks, and no more: HTTP/1.1 and 1.0 answers, with a Content-Length, chunked or
ended by the close of the connection, interim 1xx answers skipped; TLS verified against a CA
bundle; a proxy from the environment, as requests reads it (HTTP(S)_PROXY, NO_PROXY), by
CONNECT for https and by absolute URL for http. Each connection belongs to one thread.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib import request as urllib_request
from urllib.parse import unquote, urlsplit

from raasctl.redaction import register_secret

MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers, together
MAX_BODY_BYTES = 64 * 1024  # read of a body, unless the origin says; longer is cut, and closed
CHUNK = 64 * 1024
_STATUS = re.compile(r"[1-5][0-9][0-9]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class WireError(Exception):
    """The exchange failed: the connection could not be made, or the answer was not HTTP."""


class WireTimeout(WireError):
    """No connection, or no whole answer, within the time allowed."""

    def __init__(self, seconds: float, doing: str) -> None:
        super().__init__(f"timed out after {seconds:g} s {doing}")


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names; of a repeated header, the first
    body: bytes


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization header's value
    password: str | None  # to scrub from messages


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (scheme's *_PROXY or ALL_PROXY, unless
    NO_PROXY covers its host), or None."""
    parts = urlsplit(url)
    proxies = urllib_request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    bypass = urllib_request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(parts.hostname or "", proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def parse_proxy(url: str) -> Proxy:
    """A proxy URL (`http://user:password@host:port`; the scheme may be left out)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"proxy {parts.hostname}: only http:// proxies are supported")
    authorization = password = None
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        authorization = f"Basic {token}"
    return Proxy(parts.hostname or "", parts.port or 80, authorization, password or None)


def proxy_for(url: str) -> Proxy | None:
    """The environment's proxy for `url`, parsed, with its password registered as a secret
    (scrubbed from every message); None when there is none. ValueError: not an http:// one."""
    proxy_url = environment_proxy(url)
    if proxy_url is None:
        return None
    proxy = parse_proxy(proxy_url)
    if proxy.password:
        register_secret(proxy.password)
    return proxy


class Origin:
    """Connections to one http(s)://host:port, one for each thread that calls `post`."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        timeout_s: float,
        ca_file: str,
        proxy: Proxy | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        named = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        if not named.isascii():  # an internationalised name, as DNS and Host carry it
            named = named.encode("idna").decode("ascii")
        self.authority = f"{named}:{self.port}"
        self.host_header = named if self.port == (443 if self.tls else 80) else self.authority
        self.proxy = proxy
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._context = ssl.create_default_context(cafile=ca_file) if self.tls else None
        # Through a proxy, plain http asks for the absolute URL; https tunnels by CONNECT.
        self._prefix = f"http://{self.host_header}" if proxy and not self.tls else ""
        self._local = threading.local()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def post(self, path: str, headers: str, body: bytes) -> Answer:
        """POST `body` to `path`; `headers` are the request's own header lines, each ended by
        CRLF (Host, Content-Length and proxy credentials are added here)."""
        if self.proxy and self.proxy.authorization and not self.tls:
            headers += f"Proxy-Authorization: {self.proxy.authorization}\r\n"
        request = (
            f"POST {self._prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        connection = self._connection()
        deadline = time.monotonic() + self.timeout_s
        try:
            connection.sock.settimeout(self.timeout_s)
            connection.sock.sendall(request)
            answer, reusable = connection.read_answer(deadline)
        except BaseException as exc:
            self._drop(connection)
            if isinstance(exc, TimeoutError):
                raise WireTimeout(self.timeout_s, "sending the request") from None
            if isinstance(exc, OSError):
                raise WireError(_os_reason(exc)) from None
            raise
        if not reusable:
            self._drop(connection)
        return answer

    def connect(self) -> None:
        """Open the calling thread's connection, if it has none that is still good."""
        self._connection()

    def close(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            sock.close()

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and connection.dropped():
            self._drop(connection)
            connection = None
        if connection is None:
            connection = _Connection(self._connect(), self.timeout_s, self.max_body_bytes)
            self._local.connection = connection
            with self._lock:
                self._open.add(connection.sock)
        return connection

    def _drop(self, connection: _Connection) -> None:
        self._local.connection = None
        with self._lock:
            self._open.discard(connection.sock)
        connection.sock.close()

    def _connect(self) -> socket.socket:
        host, port = (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port)
        where = f"proxy {host}:{port}" if self.proxy else f"{host}:{port}"
        seconds = self.connect_timeout_s
        try:
            sock = socket.create_connection((host, port), timeout=seconds)
        except TimeoutError:
            raise WireTimeout(seconds, f"connecting to {where}") from None
        except OSError as exc:
            raise WireError(f"{where}: {_os_reason(exc)}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.proxy and self.tls:
                self._tunnel(sock)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise WireTimeout(seconds, f"setting up the connection to {where}") from None
            if isinstance(exc, OSError):
                raise WireError(f"{self.authority}: {_os_reason(exc)}") from None
            raise
        return sock

    def _tunnel(self, sock: socket.socket) -> None:
        assert self.proxy is not None
        target = self.authority
        auth = self.proxy.authorization
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n" + (
            f"Proxy-Authorization: {auth}\r\n" if auth else ""
        )
        sock.sendall((request + "\r\n").encode("latin-1"))
        tunnel = _Connection(sock, self.connect_timeout_s)
        _, status, reason, _ = tunnel.read_head(time.monotonic() + self.connect_timeout_s)
        if status != 200:
            where = f"proxy {self.proxy.host}:{self.proxy.port}"
            raise WireError(f"{where} refused the tunnel to {target}: {status} {reason}")
        if tunnel.buffer:
            raise WireError(f"proxy {self.proxy.host}:{self.proxy.port} wrote past its answer")


class _Connection:
    """A socket and what has been read from it beyond the last answer."""

    def __init__(
        self, sock: socket.socket, timeout_s: float, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.sock = sock
        self.buffer = b""
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes

    def dropped(self) -> bool:
        """Whether the server closed (or wrote on) this idle connection: it cannot be used."""
        if self.buffer:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def read_answer(self, deadline: float) -> tuple[Answer, bool]:
        """The next final answer and whether the connection can carry another request."""
        version, status, reason, headers = self.read_head(deadline)
        while status < 200:  # 100 Continue and the like: the answer follows
            version, status, reason, headers = self.read_head(deadline)
        connection = headers.get("connection", "").lower()
        reusable = "close" not in connection and (
            version != "HTTP/1.0" or "keep-alive" in connection
        )
        if status in (204, 304):
            return Answer(status, reason, headers, b""), reusable
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, complete = self._read_chunked(deadline)
        elif "content-length" in headers:
            body, complete = self._read_length(_content_length(headers), deadline)
        else:  # the body ends with the connection
            body, complete = self._read_length(None, deadline)
            reusable = False
        return Answer(status, reason, headers, body), reusable and complete

    def read_head(self, deadline: float) -> tuple[str, int, str, dict[str, str]]:
        while True:
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end >= 0:
                break
            if len(self.buffer) >= MAX_HEAD_BYTES + 4:
                raise WireError(f"the answer's headers run over {MAX_HEAD_BYTES // 1024} KiB")
            if not self._fill(deadline):
                if self.buffer:
                    raise WireError("the connection closed in the middle of the answer's headers")
                raise WireError("the server closed the connection without answering")
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not _STATUS.fullmatch(code):
            raise WireError(f"not an HTTP answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise WireError(f"a malformed header line in the answer: {line[:80]!r}")
            headers.setdefault(name.lower(), value.strip())
        return version, int(code), reason.strip(), headers

    def _read_length(self, length: int | None, deadline: float) -> tuple[bytes, bool]:
        """A body of `length` bytes (None: up to the close); whether all of it was read."""
        limit = self.max_body_bytes
        want = limit if length is None else min(length, limit)
        if not self._gather(want, deadline) and length is not None:
            raise WireError("the connection closed in the middle of the answer's body")
        body, self.buffer = self.buffer[:want], self.buffer[want:]
        return body, length is not None and length <= limit

    def _read_chunked(self, deadline: float) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self._read_line(deadline)
            digits = size_line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(digits):  # int() would take "-5", "0x5" and "1_0" too
                raise WireError(f"a malformed chunk size in the answer: {size_line[:40]!r}")
            size = int(digits, 16)
            if size == 0:
                while self._read_line(deadline):  # the trailer, up to its empty line
                    pass
                return b"".join(chunks), True
            if total + size > self.max_body_bytes:
                chunks.append(self.buffer[: self.max_body_bytes - total])
                return b"".join(chunks), False
            if not self._gather(size + 2, deadline):
                raise WireError("the connection closed in the middle of the answer's body")
            chunks.append(self.buffer[:size])
            total += size
            self.buffer = self.buffer[size + 2 :]

    def _read_line(self, deadline: float) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise WireError("a line of the answer's body framing is too long")
            if not self._fill(deadline):
                raise WireError("the connection closed in the middle of the answer's body")
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _fill(self, deadline: float) -> bool:
        """Reads what has come into the buffer; False at the end of the connection."""
        data = self._recv(deadline)
        self.buffer += data
        return bool(data)

    def _gather(self, want: int, deadline: float) -> bool:
        """Read until the buffer holds `want` bytes, joining the reads once (a long body is
        many reads: adding each to the buffer would copy it over and over); False when the
        connection ended first."""
        parts, have = [self.buffer], len(self.buffer)
        while have < want:
            data = self._recv(deadline)
            if not data:
                break
            parts.append(data)
            have += len(data)
        self.buffer = b"".join(parts)
        return have >= want

    def _recv(self, deadline: float) -> bytes:
        """What has come (b"" at the end of the connection)."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)  # the whole answer within the timeout, however it trickles
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            raise WireTimeout(self.timeout_s, "waiting for the answer") from None
        except OSError as exc:
            raise WireError(_os_reason(exc)) from None
        return data


def _content_length(headers: dict[str, str]) -> int:
    value = headers["content-length"]
    if not _DIGITS.fullmatch(value):  # refuses "5, 5", "-5" and "²" (a digit to isdigit)
        raise WireError(f"an invalid Content-Length in the answer: {value[:40]!r}")
    return int(value)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or type(exc).__name__
