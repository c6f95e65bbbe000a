"""The sinks: the SQLite ledger (embedded) and the HTTP callback (against a real local server).
What both adapters must do alike is in test_sink_contract.py."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import closed_port

from raasctl.codes import ErrorCode
from raasctl.envelope import Envelope, entry_key, mock_key
from raasctl.errors import ConfigError, SinkError
from raasctl.redaction import redact
from raasctl.sinks.base import Applied
from raasctl.sinks.http import HttpSink, parse_retry_after
from raasctl.sinks.sqlite import SqliteLedger
from raasctl.state.base import AppliedEntry, EntryStatus, RunRecord
from raasctl.state.sqlite import SqliteState

TOKEN = "s3cr3t-callback-token"

DEPOSIT = {
    "deposit_id": "DEP-1",
    "deposit_reference": "REF-77",
    "customer": "Acme Corp",
    "customer_id": "C-9",
    "company": "Acme Holdings",
    "currency": "USD",
    "amount": "1234.50",
    "deposit_date": "2026-03-01",
    "status": "Applied",
    "applied_invoices": ["INV-1", "INV-2"],
}
BILL = {
    "invoice_id": "INV-1",
    "invoice_number": "2026-0001",
    "customer_id": "C-9",
    "currency": "EUR",
    "total_amount": "100.10",
    "amount_due": "0.00",
    "payment_status": "Paid",
    "payment_date": "2026-03-02",
}
LSP_BILL = {
    "payment_id": "PAY-1",
    "supplier": "Lingo Ltd",
    "supplier_id": "S-3",
    "currency": "GBP",
    "payment_date": "2026-03-03",
    "payment_status": "Complete",
    "on_hold": True,
    "supplier_invoice_id": "SI-1",
    "invoice_number": "L-55",
    "amount_paid": "99.99",
    "invoice_status": "Paid",
}


def envelope(cron: str, payload: dict[str, Any], *, run_id: str = "run-1") -> Envelope:
    entity = str(next(iter(v for k, v in payload.items() if k.endswith("_id"))))
    return Envelope.new(
        cron=cron, run_id=run_id, key=entry_key(cron, entity, payload), payload=payload
    )


# ---------------------------------------------------------------- SQLite ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    sink = SqliteLedger(tmp_path / "local.db")
    yield sink
    sink.close()


def rows(path: Path, sql: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql)]


def test_a_deposit_is_stored_with_exact_amounts_and_its_origin(ledger: SqliteLedger) -> None:
    entry = envelope("clientDepositUpdate", DEPOSIT)

    assert ledger.apply(entry) is Applied.APPLIED

    [row] = rows(ledger.path, "SELECT * FROM ledger_client_deposits")
    assert row["deposit_id"] == "DEP-1"
    assert row["amount"] == "1234.50"  # text, trailing zero kept: never a float
    assert json.loads(row["applied_invoices"]) == ["INV-1", "INV-2"]
    assert (row["status"], row["deposit_date"]) == ("Applied", "2026-03-01")
    assert (row["run_id"], row["entry_key"]) == ("run-1", entry.key)
    assert ledger.counts() == {
        "client_deposits": 1,
        "client_bills": 0,
        "lsp_bills": 0,
        "applications": 1,
    }


def test_applying_a_key_twice_changes_nothing(ledger: SqliteLedger) -> None:
    entry = envelope("clientDepositUpdate", DEPOSIT)
    ledger.apply(entry)
    before = rows(ledger.path, "SELECT * FROM ledger_client_deposits")
    # Same key with a different body: the key alone decides.
    again = Envelope.new(
        cron=entry.cron,
        run_id="run-2",
        key=entry.key,
        payload={**DEPOSIT, "status": "Reversed"},
    )

    assert ledger.apply(again) is Applied.ALREADY_APPLIED

    assert rows(ledger.path, "SELECT * FROM ledger_client_deposits") == before
    assert ledger.counts()["applications"] == 1


def test_a_new_version_of_a_record_is_an_upsert(ledger: SqliteLedger) -> None:
    ledger.apply(envelope("clientBillUnpaidStatus", {**BILL, "payment_status": "Unpaid"}))
    paid = envelope("clientBillPaidStatus", BILL, run_id="run-2")

    assert ledger.apply(paid) is Applied.APPLIED

    [row] = rows(ledger.path, "SELECT * FROM ledger_client_bills")
    assert (row["payment_status"], row["amount_due"], row["total_amount"]) == (
        "Paid",
        "0.00",
        "100.10",
    )
    assert (row["run_id"], row["entry_key"]) == ("run-2", paid.key)
    assert ledger.counts()["client_bills"] == 1
    assert ledger.counts()["applications"] == 2


def test_lsp_bills_are_keyed_by_supplier_invoice(ledger: SqliteLedger) -> None:
    ledger.apply(envelope("lspBillUpdateStatus", LSP_BILL))
    ledger.apply(
        envelope(
            "lspBillUpdateStatus", {**LSP_BILL, "supplier_invoice_id": "SI-2", "on_hold": False}
        )
    )

    table = rows(ledger.path, "SELECT * FROM ledger_lsp_bills ORDER BY supplier_invoice_id")
    assert [(row["supplier_invoice_id"], row["on_hold"]) for row in table] == [
        ("SI-1", 1),
        ("SI-2", 0),
    ]
    assert table[0]["payment_id"] == "PAY-1" and table[0]["amount_paid"] == "99.99"


def test_amounts_keep_every_digit(ledger: SqliteLedger) -> None:
    ledger.apply(envelope("clientDepositUpdate", {**DEPOSIT, "amount": "12345678901234567890.12"}))
    ledger.apply(envelope("clientDepositUpdate", {**DEPOSIT, "deposit_id": "DEP-2", "amount": 7}))

    amounts = rows(ledger.path, "SELECT amount FROM ledger_client_deposits ORDER BY deposit_id")
    assert [row["amount"] for row in amounts] == ["12345678901234567890.12", "7"]


@pytest.mark.parametrize(
    ("cron", "payload", "reason"),
    [
        ("unknownCron", DEPOSIT, "no ledger table for cron 'unknownCron'"),
        ("clientDepositUpdate", {**DEPOSIT, "deposit_id": None}, "lacks deposit_id"),
        ("clientBillPaidStatus", {k: v for k, v in BILL.items() if k != "invoice_id"}, "lacks"),
        ("lspBillUpdateStatus", {**LSP_BILL, "supplier_invoice_id": ""}, "supplier_invoice_id"),
        ("clientDepositUpdate", {**DEPOSIT, "amount": "12,50"}, "field amount"),
        ("lspBillUpdateStatus", {**LSP_BILL, "on_hold": "maybe"}, "field on_hold"),
    ],
    ids=["unknown-cron", "null-id", "missing-id", "empty-id", "bad-amount", "bad-flag"],
)
def test_a_payload_that_cannot_be_applied_fails_permanently(
    ledger: SqliteLedger, cron: str, payload: dict[str, Any], reason: str
) -> None:
    entry = Envelope.new(cron=cron, run_id="run-1", key=f"{cron}:x:1", payload=payload)

    with pytest.raises(SinkError, match=reason) as caught:
        ledger.apply(entry)

    assert caught.value.retryable is False
    assert set(ledger.counts().values()) == {0}


def test_concurrent_deliveries_apply_each_key_once(ledger: SqliteLedger) -> None:
    base = envelope("clientDepositUpdate", DEPOSIT)
    copies = [
        Envelope.new(
            cron=base.cron,
            run_id="load",
            key=mock_key(base.key, "load", n),
            payload=base.payload,
            mock=True,
        )
        for n in range(50)
    ]
    barrier = threading.Barrier(8)

    def deliver_all(_: int) -> list[Applied]:
        barrier.wait()
        return [ledger.apply(copy) for copy in copies]

    with ThreadPoolExecutor(8) as pool:
        outcomes = [outcome for result in pool.map(deliver_all, range(8)) for outcome in result]

    assert outcomes.count(Applied.APPLIED) == 50
    assert outcomes.count(Applied.ALREADY_APPLIED) == 7 * 50
    assert ledger.counts() == {
        "client_deposits": 1,
        "client_bills": 0,
        "lsp_bills": 0,
        "applications": 50,
    }
    [mock_count] = rows(ledger.path, "SELECT SUM(mock) AS n FROM ledger_applications")
    assert mock_count["n"] == 50


def test_the_ledger_shares_the_environment_file_with_state(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    ledger = SqliteLedger(path)
    state.create_run(RunRecord("run-1", "clientDepositUpdate", "local", False, datetime.now(UTC)))

    ledger.apply(envelope("clientDepositUpdate", DEPOSIT))

    assert state.get_run("run-1") is not None
    assert ledger.counts()["applications"] == 1
    names = {row["name"] for row in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {name for name in names if not name.startswith(("state_", "sqlite_"))} == {
        "ledger_client_deposits",
        "ledger_client_bills",
        "ledger_lsp_bills",
        "ledger_applications",
    }
    state.close()
    ledger.close()


def test_sharing_the_state_file_the_ledger_records_the_key_with_its_apply(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    state.is_applied("warm up")  # the state's tables exist, as in the worker
    ledger = SqliteLedger(path)
    deposit = envelope("clientDepositUpdate", DEPOSIT)

    assert ledger.apply(deposit) is Applied.APPLIED

    assert state.is_applied(deposit.key)
    assert state.record_applied(deposit.key, deposit.run_id, datetime.now(UTC)) is False
    [record] = rows(path, "SELECT run_id FROM state_applied")
    assert record["run_id"] == "run-1"
    state.close()
    ledger.close()


def test_the_ledger_and_its_idempotency_record_commit_together(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    state.is_applied("warm up")
    ledger = SqliteLedger(path)
    deposit = envelope("clientDepositUpdate", DEPOSIT)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON state_applied"
        " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )

    with pytest.raises(SinkError, match="disk I/O error") as caught:
        ledger.apply(deposit)

    assert caught.value.retryable
    assert ledger.counts()["applications"] == ledger.counts()["client_deposits"] == 0
    conn.execute("DROP TRIGGER fail")
    conn.close()
    assert ledger.apply(deposit) is Applied.APPLIED  # the retry applies it
    assert state.is_applied(deposit.key)
    state.close()
    ledger.close()


def test_the_ledger_says_it_records_applies_only_in_the_state_of_its_own_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "local.db"
    state, other = SqliteState(path), SqliteState(tmp_path / "other.db")
    state.is_applied("warm up")
    other.is_applied("warm up")
    ledger = SqliteLedger(path)

    assert ledger.records_applied_in(state)
    assert not ledger.records_applied_in(other)
    assert not HttpSink("http://127.0.0.1:9/apply", "t", timeout_s=1.0).records_applied_in(state)
    for closable in (state, other, ledger):
        closable.close()


def test_an_entry_applied_before_the_state_existed_gets_its_record_on_the_next_apply(
    tmp_path: Path,
) -> None:
    path = tmp_path / "local.db"
    ledger = SqliteLedger(path)
    deposit = envelope("clientDepositUpdate", DEPOSIT)
    assert ledger.apply(deposit) is Applied.APPLIED  # no state tables: no record
    ledger.close()
    state = SqliteState(path)
    assert not state.is_applied(deposit.key)
    ledger = SqliteLedger(path)

    assert ledger.apply_batch([deposit]) == [None]  # applied before: in place

    assert state.is_applied(deposit.key)  # and now recorded, as every apply leaves it
    state.close()
    ledger.close()


def test_a_record_the_sink_wrote_is_not_written_again_but_its_version_is(
    tmp_path: Path,
) -> None:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    state.create_run(RunRecord("run-1", "clientDepositUpdate", "local", False, datetime.now(UTC)))
    entries = [
        AppliedEntry("k-recorded", "run-1", "clientDepositUpdate", "D-1", "v2", recorded=True),
        AppliedEntry("k-not", "run-1", "clientDepositUpdate", "D-2", "v1"),
    ]

    state.record_outcomes(
        "run-1",
        {entry.key: EntryStatus.SUCCEEDED for entry in entries},
        datetime.now(UTC),
        applied=entries,
    )

    assert [r["key"] for r in rows(path, "SELECT key FROM state_applied")] == ["k-not"]
    versions = rows(path, "SELECT entity_id, version FROM state_versions ORDER BY entity_id")
    assert [(r["entity_id"], r["version"]) for r in versions] == [("D-1", "v2"), ("D-2", "v1")]
    state.close()


def test_a_ledger_in_a_file_of_its_own_applies_without_state_tables(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    assert ledger.apply(envelope("clientDepositUpdate", DEPOSIT)) is Applied.APPLIED
    names = {r["name"] for r in rows(ledger.path, "SELECT name FROM sqlite_master")}
    assert "state_applied" not in names
    ledger.close()


# ---------------------------------------------------------------- HTTP callback


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class CallbackServer:
    """The accounting service's callback endpoint, on 127.0.0.1, answering `reply`."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.received: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(Received(self.path, dict(self.headers.items()), body))
                reply = outer.reply
                time.sleep(reply.delay_s)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the default backlog of 5 resets a burst of connections

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    running = CallbackServer()
    yield running
    running.stop()


@pytest.fixture
def sink(server: CallbackServer) -> Iterator[HttpSink]:
    http_sink = HttpSink(f"{server.url}/cron-jobs/", TOKEN, timeout_s=2.0)
    yield http_sink
    http_sink.close()


def test_an_entry_is_posted_with_its_headers_and_payload(
    server: CallbackServer, sink: HttpSink
) -> None:
    entry = envelope("clientDepositUpdate", DEPOSIT)

    assert sink.apply(entry) is Applied.APPLIED

    [request] = server.received
    assert request.path == "/cron-jobs/clientDepositUpdate"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == entry.key
    assert request.headers["X-Raasctl-Run-Id"] == "run-1"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == DEPOSIT


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_applied(server: CallbackServer, sink: HttpSink, status: int) -> None:
    server.reply = Reply(status)

    assert sink.apply(envelope("clientBillPaidStatus", BILL)) is Applied.APPLIED


def test_409_is_already_applied(server: CallbackServer, sink: HttpSink) -> None:
    server.reply = Reply(409, body='{"error": "duplicate idempotency key"}')

    assert sink.apply(envelope("clientBillPaidStatus", BILL)) is Applied.ALREADY_APPLIED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_408_429_and_5xx_are_retryable(server: CallbackServer, sink: HttpSink, status: int) -> None:
    server.reply = Reply(status, body="try later")

    with pytest.raises(SinkError, match=f"HTTP {status}") as caught:
        sink.apply(envelope("lspBillUpdateStatus", LSP_BILL))

    assert caught.value.retryable is True
    assert caught.value.retry_after_s is None
    assert len(server.received) == 1  # no retry inside the sink


def test_retry_after_seconds_is_passed_on(server: CallbackServer, sink: HttpSink) -> None:
    server.reply = Reply(429, headers={"Retry-After": "7"})

    with pytest.raises(SinkError) as caught:
        sink.apply(envelope("lspBillUpdateStatus", LSP_BILL))

    assert caught.value.retryable is True
    assert caught.value.retry_after_s == 7.0


def test_retry_after_http_date_is_passed_on(server: CallbackServer, sink: HttpSink) -> None:
    later = datetime.fromtimestamp(time.time() + 120, UTC)
    server.reply = Reply(503, headers={"Retry-After": format_datetime(later, usegmt=True)})

    with pytest.raises(SinkError) as caught:
        sink.apply(envelope("lspBillUpdateStatus", LSP_BILL))

    assert caught.value.retry_after_s is not None
    assert 100 < caught.value.retry_after_s <= 120


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Sun, 01 Mar 2026 12:01:30 GMT", 90.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    assert parse_retry_after(value, now) == seconds


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_fail_permanently_with_status_and_excerpt(
    server: CallbackServer, sink: HttpSink, status: int
) -> None:
    server.reply = Reply(status, body='{"error":\n  "customer_id C-9 unknown"}' + " pad" * 200)

    with pytest.raises(SinkError) as caught:
        sink.apply(envelope("clientBillPaidStatus", BILL))

    message = str(caught.value)
    assert caught.value.retryable is False
    assert f"HTTP {status}" in message
    assert '{"error": "customer_id C-9 unknown"} pad' in message
    assert len(message) < 400  # an excerpt, not the whole body


def test_the_token_never_appears_in_an_error(server: CallbackServer, sink: HttpSink) -> None:
    # A server that echoes the request back, Authorization header included.
    server.reply = Reply(401, body=f"bad credentials: Authorization: Bearer {TOKEN}")

    with pytest.raises(SinkError) as caught:
        sink.apply(envelope("clientBillPaidStatus", BILL))

    assert "bad credentials" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.args)


def test_a_redirect_is_not_followed(server: CallbackServer, sink: HttpSink) -> None:
    server.reply = Reply(302, headers={"Location": f"{server.url}/elsewhere"})

    with pytest.raises(SinkError, match="HTTP 302") as caught:
        sink.apply(envelope("clientBillPaidStatus", BILL))

    # Not a failure of the entry: the callback moved, so the worker stops (issue: hostile
    # input) instead of dead-lettering every message.
    assert caught.value.stops_worker is True
    assert caught.value.code is ErrorCode.SINK_REDIRECT
    assert f"redirect to {server.url}/elsewhere" in str(caught.value)
    assert [request.path for request in server.received] == ["/cron-jobs/clientBillPaidStatus"]


def test_a_slow_response_times_out_as_retryable(server: CallbackServer) -> None:
    server.reply = Reply(200, delay_s=1.0)
    sink = HttpSink(server.url, TOKEN, timeout_s=0.2)
    started = time.monotonic()

    with pytest.raises(SinkError, match=r"timed out after 0\.2 s") as caught:
        sink.apply(envelope("clientDepositUpdate", DEPOSIT))

    assert time.monotonic() - started < 0.9
    assert caught.value.retryable is True
    assert TOKEN not in str(caught.value)
    sink.close()


def test_a_refused_connection_is_retryable() -> None:
    port = closed_port()
    sink = HttpSink(f"http://127.0.0.1:{port}", TOKEN, timeout_s=2.0)

    with pytest.raises(SinkError, match=r"connection failed.*refused") as caught:
        sink.apply(envelope("clientDepositUpdate", DEPOSIT))

    assert caught.value.retryable is True
    assert "Max retries" not in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_connect_opens_the_connection_the_first_apply_then_uses() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    sink = HttpSink(f"http://127.0.0.1:{listener.getsockname()[1]}", TOKEN, timeout_s=5.0)
    try:
        sink.connect()
        accepted, _ = listener.accept()  # before any apply
        with accepted:
            listener.settimeout(0.2)
            answered: list[bytes] = []

            def answer() -> None:
                answered.append(accepted.recv(65536))
                accepted.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

            thread = threading.Thread(target=answer)
            thread.start()
            assert sink.apply(envelope("clientDepositUpdate", DEPOSIT)) is Applied.APPLIED
            thread.join()
            assert answered[0].startswith(b"POST /clientDepositUpdate HTTP/1.1")
            with pytest.raises(TimeoutError):
                listener.accept()  # the apply opened no other connection
    finally:
        sink.close()
        listener.close()


def test_a_connect_that_fails_is_left_to_the_first_apply() -> None:
    port = closed_port()
    sink = HttpSink(f"http://127.0.0.1:{port}", TOKEN, timeout_s=2.0)
    sink.connect()  # says nothing
    with pytest.raises(SinkError, match=r"connection failed.*refused"):
        sink.apply(envelope("clientDepositUpdate", DEPOSIT))


def test_a_non_ascii_key_is_sent_percent_encoded(server: CallbackServer, sink: HttpSink) -> None:
    entry = Envelope.new(
        cron="clientDepositUpdate",
        run_id="run-1",
        key="clientDepositUpdate:DÉP-1:abc",
        payload=DEPOSIT,
    )

    assert sink.apply(entry) is Applied.APPLIED

    assert server.received[0].headers["Idempotency-Key"] == "clientDepositUpdate%3AD%C3%89P-1%3Aabc"


def test_many_threads_apply_at_once(server: CallbackServer, sink: HttpSink) -> None:
    entries = [
        envelope("clientDepositUpdate", {**DEPOSIT, "deposit_id": f"D{n}"}) for n in range(64)
    ]

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(sink.apply, entries))

    assert outcomes == [Applied.APPLIED] * 64
    assert sorted(request.headers["Idempotency-Key"] for request in server.received) == sorted(
        entry.key for entry in entries
    )


def test_the_environments_proxy_is_used_as_requests_would(
    server: CallbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The callback server plays the proxy: a proxied request names the whole URL.
    host = server.url.removeprefix("http://")
    monkeypatch.setenv("HTTP_PROXY", f"http://ops:s%40fe@{host}")
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    sink = HttpSink("http://accounting.invalid/cron-jobs", TOKEN)

    sink.apply(envelope("clientDepositUpdate", DEPOSIT))

    (received,) = server.received
    assert received.path == "http://accounting.invalid/cron-jobs/clientDepositUpdate"
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["proxy-authorization"] == "Basic b3BzOnNAZmU="  # ops:s@fe
    sink.close()


def test_no_proxy_is_honoured(server: CallbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    sink = HttpSink(server.url, TOKEN)

    assert sink.apply(envelope("clientDepositUpdate", DEPOSIT)) is Applied.APPLIED
    assert server.received[0].path == "/clientDepositUpdate"
    sink.close()


def test_the_ca_bundle_is_the_environments_or_certifis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    from raasctl.sinks.http import ca_bundle

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert ca_bundle() == certifi.where()
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "curl.pem"))
    assert ca_bundle() == str(tmp_path / "curl.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "corporate-ca.pem"))
    assert ca_bundle() == str(tmp_path / "corporate-ca.pem")


def test_a_header_value_with_a_line_break_fails_the_entry_permanently(
    server: CallbackServer, sink: HttpSink
) -> None:
    entry = envelope("clientDepositUpdate", DEPOSIT)
    entry = replace(entry, version="v1\r\nX-Injected: yes")

    with pytest.raises(SinkError, match="X-Raasctl-Version header's value") as caught:
        sink.apply(entry)

    assert caught.value.retryable is False
    assert server.received == []


def test_an_unreachable_proxy_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://ops:Pr0xyPassw0rd@127.0.0.1:{port}")
    sink = HttpSink("http://accounting.invalid/cron-jobs", TOKEN)

    with pytest.raises(SinkError) as caught:
        sink.apply(envelope("clientDepositUpdate", DEPOSIT))

    message = str(caught.value)
    assert f"connection failed: proxy 127.0.0.1:{port}: [Errno 111]" in message
    assert "refused" in message
    assert caught.value.retryable is True
    assert "Pr0xyPassw0rd" not in message and "Pr0xy" not in message
    assert redact("proxy said Pr0xyPassw0rd") == "proxy said ***"  # registered as a secret
    sink.close()


@pytest.mark.parametrize(
    ("base_url", "token", "says"),
    [
        ("http://127.0.0.1:1/cron-jobs", "tok\nen-0123456789", "sink.token: the token has a line"),
        ("ftp://accounting.example/cron-jobs", TOKEN, "sink.base_url: 'ftp://"),
    ],
)
def test_a_sink_that_could_send_nothing_is_a_config_error(
    base_url: str, token: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        HttpSink(base_url, token)

    assert "0123456789" not in str(caught.value)


def test_a_base_path_outside_ascii_is_sent_percent_encoded(server: CallbackServer) -> None:
    sink = HttpSink(f"{server.url}/comptabilité/jobs", TOKEN)

    assert sink.apply(envelope("clientDepositUpdate", DEPOSIT)) is Applied.APPLIED

    assert server.received[0].path == "/comptabilit%C3%A9/jobs/clientDepositUpdate"
    sink.close()
