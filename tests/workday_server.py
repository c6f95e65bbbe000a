"""A fake Workday on 127.0.0.1 for tests and benchmarks: RaaS reports and the OAuth token endpoint.

    with FakeWorkday() as workday:
        workday.add_report("Client_Deposits", [{"Deposit_ID": "D-1"}])
        source = WorkdaySource(workday.config("basic"), workday.secret, backoff_s=0.01)

What it serves (http.server in a thread, HTTP/1.1, reports streamed with chunked encoding):

- GET /ccx/service/customreport2/<tenant>/<owner>/<report>?format=json&From_Date=...
  Basic auth (the integration system user) or an OAuth bearer token it issued. Without
  `format=json` it answers XML, as Workday does.
- POST /ccx/oauth2/<tenant>/token (grant_type=refresh_token; client id and secret by HTTP
  Basic or in the form) → {"access_token", "token_type": "Bearer", "expires_in"}.

Scripted faults: `script(Reply(...), ...)` queues replies for the next report requests (401,
429 with Retry-After, 500 with a SOAP fault, a slow start, a stall mid-body, a non-JSON body);
`script_token(...)` does the same for the token endpoint; `revoke_tokens()` makes every issued
token fail with 401. `add_generated_report(name, n)` streams n entries without ever building
the report in memory (the run benchmark serves 200,000 of them); `add_streamed_report(name,
chunks)` streams a body as given pieces. Every request is recorded.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from raasctl.config import WorkdaySource as WorkdaySourceConfig

JSON = "application/json; charset=utf-8"
XML = "text/xml; charset=utf-8"


def soap_fault(
    faultstring: str, faultcode: str = "SOAP-ENV:Client.validationError", message: str = ""
) -> str:
    """A Workday-style SOAP 1.1 fault body."""
    detail = (
        "<detail><wd:Validation_Fault><wd:Validation_Error>"
        f"<wd:Message>{message or faultstring}</wd:Message>"
        "</wd:Validation_Error></wd:Validation_Fault></detail>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
        '<SOAP-ENV:Body><SOAP-ENV:Fault xmlns:wd="urn:com.workday/bsvc">'
        f"<faultcode>{faultcode}</faultcode><faultstring>{faultstring}</faultstring>{detail}"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body=None` with status 200 serves the report as usual."""

    status: int = 200
    body: str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON
    delay_s: float = 0.0  # before the status line: a slow report (the client's read timeout)
    stall_s: float = 0.0  # after the first chunk of the body: a connection that goes quiet
    trickle_s: float = 0.0  # the body one byte at a time, this long apart: a crawling server

    @classmethod
    def fault(cls, faultstring: str, status: int = 500) -> Reply:
        return cls(status=status, body=soap_fault(faultstring), content_type=XML)

    @classmethod
    def throttled(cls, retry_after: str | int = 1) -> Reply:
        return cls(
            status=429,
            body='{"error":"rate limit exceeded"}',
            headers={"Retry-After": str(retry_after)},
        )


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    auth: Literal["basic", "bearer", "none"]
    status: int = 0


# ---------------------------------------------------------------- generated entries


def deposit_entry(n: int) -> dict[str, Any]:
    """A realistic clientDepositUpdate entry, different for every n, with Workday's quirks."""
    amount = f"{100 + n % 9000}.{n % 100:02d}"
    return {
        "Deposit_ID": f"DEP-GEN-{n:07d}",
        "Deposit_Reference": f"WIRE {n:07d} NORTHWIND TRADERS",
        "Customer": "Northwind Traders",
        "Customer_ID": f"CUS-{10000 + n % 500}",
        "Company": "Acme Holdings US",
        "Currency": "USD",
        # Amounts alternate between a number and a numeric string, as real reports do.
        "Deposit_Amount": float(amount) if n % 2 else amount,
        "Deposit_Date": f"2026-11-{1 + n % 28:02d}-08:00",
        "Deposit_Status": "Deposited",
        "Applied_Invoices": f"INV-GEN-{n:07d}; INV-GEN-{n + 1:07d}",
    }


def invoice_entry(n: int) -> dict[str, Any]:
    """A clientBillPaidStatus / clientBillUnpaidStatus entry."""
    return {
        "Invoice_ID": f"CI-GEN-{n:07d}",
        "Invoice_Number": f"INV-GEN-{n:07d}",
        "Customer_ID": f"CUS-{10000 + n % 500}",
        "Currency": "USD",
        "Total_Amount": f"{200 + n % 5000}.00",
        "Amount_Due": n % 3 * 50,
        "Payment_Status": ("Paid", "Unpaid", "Partially Paid")[n % 3],
        "Payment_Date": f"2026-11-{1 + n % 28:02d}",
    }


def supplier_payment_entry(n: int) -> dict[str, Any]:
    """An lspBillUpdateStatus entry with one to three invoices in its group."""
    return {
        "Payment_ID": f"SPAY-GEN-{n:07d}",
        "Supplier": "Lingua Franca Translations GmbH",
        "Supplier_ID": f"SUP-{n % 700:06d}",
        "Currency": "EUR",
        "Payment_Date": f"2026-11-{1 + n % 28:02d}+01:00",
        "Payment_Status": "Complete",
        "On_Hold": str(n % 2),
        "Supplier_Invoices_group": [
            {
                "Supplier_Invoice_ID": f"SI-GEN-{n:07d}-{row}",
                "Invoice_Number": f"LFT-{n:07d}-{row}",
                "Amount_Paid": f"{50 + row * 10}.00",
                "Invoice_Status": "Paid",
            }
            for row in range(1 + n % 3)
        ],
    }


GENERATORS: dict[str, Callable[[int], dict[str, Any]]] = {
    "clientDepositUpdate": deposit_entry,
    "clientBillPaidStatus": invoice_entry,
    "clientBillUnpaidStatus": invoice_entry,
    "lspBillUpdateStatus": supplier_payment_entry,
}


# json cannot write a Decimal as a number; mark it, then put its exact digits back unquoted.
_DECIMAL_MARK = "@@decimal@@"
_DECIMAL = re.compile(rf'"{_DECIMAL_MARK}([-+0-9.Ee]+)"')


def _decimal_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{_DECIMAL_MARK}{value}"
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_entry(entry: dict[str, Any]) -> str:
    """One entry as compact JSON; Decimals become JSON numbers with their exact digits."""
    text = json.dumps(entry, separators=(",", ":"), default=_decimal_default)
    return _DECIMAL.sub(r"\1", text) if _DECIMAL_MARK in text else text


def report_chunks(
    entries: Iterable[dict[str, Any] | str], *, entries_per_chunk: int = 500
) -> Iterator[bytes]:
    """`{"Report_Entry":[...]}` in pieces, never the whole document at once.

    An entry may be given as JSON text already (the fastest way to serve a huge report).
    """
    # The opening travels with the first entries, so a stall after the first chunk comes
    # after some entries have arrived.
    prefix = '{"Report_Entry":['
    batch: list[str] = []
    for entry in entries:
        batch.append(entry if isinstance(entry, str) else dumps_entry(entry))
        if len(batch) >= entries_per_chunk:
            yield (prefix + ",".join(batch)).encode()
            prefix = ","
            batch = []
    if batch:
        yield (prefix + ",".join(batch) + "]}").encode()
    else:
        yield ("]}" if prefix == "," else prefix + "]}").encode()


# ---------------------------------------------------------------- the server


@dataclass
class _Report:
    chunks: Callable[[], Iterable[bytes]]


class FakeWorkday:
    def __init__(
        self,
        *,
        tenant: str = "acme_uat",
        owner: str = "ISU_Accounting",
        username: str = "ISU_Accounting@acme_uat",
        password: str = "wd-Passw0rd-for-tests",
        client_id: str = "raasctl-api-client",
        client_secret: str = "wd-client-secret-for-tests",
        refresh_token: str = "wd-refresh-token-for-tests",
        token_ttl_s: float = 3600,
    ) -> None:
        self.tenant = tenant
        self.owner = owner
        self.username = username
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.token_ttl_s = token_ttl_s
        self.requests: list[RecordedRequest] = []
        self._reports: dict[str, _Report] = {}
        self._replies: deque[Reply] = deque()
        self._token_replies: deque[Reply] = deque()
        self._tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeWorkday:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        # A short poll interval keeps stop() quick.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-workday"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes slow and stalled replies
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeWorkday:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake Workday first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ reports

    def add_report(
        self,
        name: str,
        entries: list[dict[str, Any]] | None = None,
        *,
        body: str | bytes | None = None,
    ) -> None:
        """A report from its entries, or a raw body (`"{}"`, odd shapes, not JSON at all)."""
        if body is not None:
            raw = body.encode() if isinstance(body, str) else body
            self._reports[name] = _Report(lambda: [raw])
        else:
            items = list(entries or [])
            self._reports[name] = _Report(lambda: report_chunks(items))

    def add_generated_report(
        self,
        name: str,
        count: int,
        make_entry: Callable[[int], dict[str, Any] | str] = deposit_entry,
        *,
        entries_per_chunk: int = 500,
    ) -> None:
        """`count` entries made on the fly by `make_entry(n)` (n = 1..count) and streamed.

        `make_entry` returns a dict, or JSON text for speed (see GENERATORS for each cron).
        """

        def chunks() -> Iterator[bytes]:
            entries = (make_entry(n) for n in range(1, count + 1))
            return report_chunks(entries, entries_per_chunk=entries_per_chunk)

        self._reports[name] = _Report(chunks)

    def add_streamed_report(self, name: str, chunks: Callable[[], Iterable[bytes]]) -> None:
        """A report whose body is the pieces `chunks()` yields (called for every request),
        each sent as it comes: a body split anywhere, or one too big to hold."""
        self._reports[name] = _Report(chunks)

    def script(self, *replies: Reply) -> None:
        """Answer the next report requests with these, in order, then serve normally."""
        with self._lock:
            self._replies.extend(replies)

    def script_token(self, *replies: Reply) -> None:
        with self._lock:
            self._token_replies.extend(replies)

    def revoke_tokens(self) -> None:
        """Every access token issued so far now gets 401 (a refresh is needed)."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------ what happened

    @property
    def report_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if "/customreport2/" in r.path]

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/token")]

    # ------------------------------------------------------------ client side helpers

    SECRET_ENV: ClassVar[dict[str, str]] = {
        "username": "WORKDAY_USER",
        "password": "WORKDAY_PASSWORD",
        "client_id": "WORKDAY_CLIENT_ID",
        "client_secret": "WORKDAY_CLIENT_SECRET",
        "refresh_token": "WORKDAY_REFRESH_TOKEN",
    }

    def env(self) -> dict[str, str]:
        """Environment variables the `env:` references in `config()` point at."""
        return {var: str(getattr(self, attr)) for attr, var in self.SECRET_ENV.items()}

    def secret(self, ref: str) -> str:
        """A secret resolver for `config()`'s references, without touching os.environ."""
        values = self.env()
        kind, _, name = ref.partition(":")
        if kind != "env" or name not in values:
            raise KeyError(ref)
        return values[name]

    def config(
        self, auth: Literal["basic", "oauth"] = "basic", **overrides: Any
    ) -> WorkdaySourceConfig:
        """A source config pointing here, secrets as `env:WORKDAY_*` references."""
        refs = {attr: f"env:{var}" for attr, var in self.SECRET_ENV.items()}
        if auth == "basic":
            auth_config = {
                "kind": "basic",
                "username": refs["username"],
                "password": refs["password"],
            }
        else:
            auth_config = {
                "kind": "oauth",
                "client_id": refs["client_id"],
                "client_secret": refs["client_secret"],
                "refresh_token": refs["refresh_token"],
            }
        document: dict[str, Any] = {
            "kind": "workday",
            "base_url": self.base_url,
            "tenant": self.tenant,
            "owner": self.owner,
            "auth": auth_config,
            "connect_timeout_s": 2.0,
            "read_timeout_s": 5.0,
            "retries": 2,
            **overrides,
        }
        return WorkdaySourceConfig.model_validate(document)

    # ------------------------------------------------------------ server side

    def _next_reply(self, queue: deque[Reply]) -> Reply | None:
        with self._lock:
            return queue.popleft() if queue else None

    def _issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_s
        return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


def _bytes_of(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        for index in range(len(chunk)):
            yield chunk[index : index + 1]


def _handler_for(workday: FakeWorkday) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = workday

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeWorkday
    _pending: RecordedRequest

    def _record(self, status: int) -> None:
        # Recorded before the answer goes out, so a client that has its answer sees it.
        self.fake.requests.append(replace(self._pending, status=status))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    # ------------------------------------------------------------ routing

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        auth_kind, authorized = self._authorization()
        self._pending = RecordedRequest("GET", url.path, query, auth_kind)
        self._report(parts, query, authorized)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        safe_form = {k: v for k, v in form.items() if k == "grant_type"}  # never the token
        self._pending = RecordedRequest("POST", url.path, safe_form, "none")
        self._token(url.path, form)

    # ------------------------------------------------------------ endpoints

    def _report(self, parts: list[str], query: dict[str, str], authorized: bool) -> int:
        fake = self.fake
        if (
            len(parts) != 6
            or parts[:3] != ["ccx", "service", "customreport2"]
            or parts[3] != fake.tenant
        ):
            return self._send(404, soap_fault("Not Found", "SOAP-ENV:Client"), XML)
        if not authorized:
            return self._send(
                401,
                soap_fault("Invalid username or password", "SOAP-ENV:Client.authenticationError"),
                XML,
                {"WWW-Authenticate": 'Basic realm="Workday"'},
            )
        reply = fake._next_reply(fake._replies)
        if reply is not None and (reply.status != 200 or reply.body is not None):
            fake._wait(reply.delay_s)
            return self._send(reply.status, reply.body or "", reply.content_type, reply.headers)
        report = fake._reports.get(parts[5])
        if parts[4] != fake.owner or report is None:
            fault = f"Report '{parts[5]}' not found for owner '{parts[4]}'"
            return self._send(404, soap_fault(fault, "SOAP-ENV:Client"), XML)
        if query.get("format") != "json":
            # Workday's default format is XML.
            body = '<?xml version="1.0"?><wd:Report_Data xmlns:wd="urn:com.workday.report"/>'
            return self._send(200, body, XML)
        if reply is not None:
            fake._wait(reply.delay_s)
        if reply is not None and reply.trickle_s:
            return self._stream(_bytes_of(report.chunks()), stall_s=0.0, trickle_s=reply.trickle_s)
        return self._stream(report.chunks(), stall_s=reply.stall_s if reply else 0.0)

    def _token(self, path: str, form: dict[str, str]) -> int:
        fake = self.fake
        if path.strip("/") != f"ccx/oauth2/{fake.tenant}/token":
            return self._send(404, '{"error":"not_found"}', JSON)
        reply = fake._next_reply(fake._token_replies)
        if reply is not None:
            fake._wait(reply.delay_s)
            return self._send(reply.status, reply.body or "", reply.content_type, reply.headers)
        client = self._basic_credentials() or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        if client != (fake.client_id, fake.client_secret):
            return self._send(401, '{"error":"invalid_client"}', JSON)
        if form.get("grant_type") != "refresh_token":
            return self._send(400, '{"error":"unsupported_grant_type"}', JSON)
        if form.get("refresh_token") != fake.refresh_token:
            return self._send(400, '{"error":"invalid_grant"}', JSON)
        document = {
            "access_token": fake._issue_token(),
            "token_type": "Bearer",
            "expires_in": fake.token_ttl_s,
        }
        return self._send(200, json.dumps(document), JSON)

    # ------------------------------------------------------------ auth

    def _basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def _authorization(self) -> tuple[Literal["basic", "bearer", "none"], bool]:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return "bearer", self.fake._token_valid(header[7:])
        basic = self._basic_credentials()
        if basic is not None:
            return "basic", basic == (self.fake.username, self.fake.password)
        return "none", False

    # ------------------------------------------------------------ writing

    def _send(
        self,
        status: int,
        body: str | bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> int:
        data = body.encode() if isinstance(body, str) else body
        self._record(status)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return status

    def _stream(self, chunks: Iterable[bytes], *, stall_s: float, trickle_s: float = 0.0) -> int:
        self._record(200)
        try:
            self.send_response(200)
            self.send_header("Content-Type", JSON)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index, chunk in enumerate(chunks):
                if not chunk:
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if index == 0 and stall_s:
                    self.fake._wait(stall_s)
                    if self.fake._stopping.is_set():
                        break
                if trickle_s:
                    self.wfile.flush()
                    self.fake._wait(trickle_s)
                    if self.fake._stopping.is_set():
                        break
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # The client stopped reading (it had what it needed, or it timed out).
            self.close_connection = True
        return 200
