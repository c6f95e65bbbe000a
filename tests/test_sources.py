"""Sources: Workday date prompts, the streaming parser, fixture files, and Workday RaaS
against a real HTTP server on 127.0.0.1 (tests/workday_server.py). What both adapters must do
alike is in test_source_contract.py."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from support import closed_port
from workday_server import FakeWorkday, Reply, soap_fault

from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import PACKAGED_FIXTURES
from raasctl.dates import (
    format_workday_date,
    parse_bound,
    parse_workday_date,
    prompt_params,
    report_window,
)
from raasctl.errors import SourceError, UsageError
from raasctl.sources.base import Prompts
from raasctl.sources.fixtures import FixtureSource
from raasctl.sources.stream import ReportStream, parse_entries
from raasctl.sources.workday import WorkdaySource, parse_retry_after, soap_fault_text

REPO = Path(__file__).resolve().parent.parent
PST = timezone(timedelta(hours=-8))
NOW = datetime(2026, 11, 27, 10, 30, tzinfo=PST)
PROMPTS = report_window(NOW, timedelta(days=1))
DEPOSITS = [
    {"Deposit_ID": "DEP-1", "Deposit_Amount": 12.5},
    {"Deposit_ID": "DEP-2", "Deposit_Amount": "8420.75"},
]


# ---------------------------------------------------------------- dates and prompts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27", date(2026, 11, 27)),
        ("2026-11-27-08:00", date(2026, 11, 27)),
        ("2026-11-27+05:30", date(2026, 11, 27)),
        ("2026-11-27Z", date(2026, 11, 27)),
        ("2026-11-27T00:00:00.000-08:00", date(2026, 11, 27)),
        ("2026-11-27T23:30:00+09:00", date(2026, 11, 27)),  # the date as written, not UTC's
        (" 2026-11-27 ", date(2026, 11, 27)),
    ],
)
def test_parse_workday_date_accepts_every_form(text: str, expected: date) -> None:
    assert parse_workday_date(text) == expected


@pytest.mark.parametrize("text", ["27/11/2026", "2026-13-01", "2026-11-27-8", "", "yesterday"])
def test_parse_workday_date_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a Workday date"):
        parse_workday_date(text)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 27, 10, tzinfo=PST), "2026-11-27-08:00"),
        (datetime(2026, 11, 27, 23, 59, tzinfo=UTC), "2026-11-27+00:00"),
        (datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=5, minutes=30))), "2026-01-02+05:30"),
    ],
)
def test_format_workday_date_writes_the_local_date_and_offset(
    moment: datetime, expected: str
) -> None:
    assert format_workday_date(moment) == expected
    assert parse_workday_date(format_workday_date(moment)) == moment.date()


def test_format_workday_date_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_workday_date(datetime(2026, 11, 27))


def test_report_window_looks_back_from_the_run_time() -> None:
    window = report_window(NOW, timedelta(days=1))
    assert window == Prompts(from_date=NOW - timedelta(days=1), to_date=NOW)
    assert prompt_params(window) == {"From_Date": "2026-11-26-08:00", "To_Date": "2026-11-27-08:00"}
    # Computed, not fixed: another run time gives another window.
    later = report_window(NOW + timedelta(days=3), timedelta(hours=6))
    assert prompt_params(later) == {"From_Date": "2026-11-30-08:00", "To_Date": "2026-11-30-08:00"}


def test_report_window_overrides_read_dates_in_the_run_time_zone() -> None:
    window = report_window(NOW, timedelta(days=1), since=date(2026, 11, 1), until=date(2026, 11, 5))
    assert window.from_date == datetime(2026, 11, 1, tzinfo=PST)
    assert window.to_date == datetime(2026, 11, 5, tzinfo=PST)
    only_until = report_window(NOW, timedelta(days=2), until=datetime(2026, 11, 10, 12))
    assert only_until.to_date == datetime(2026, 11, 10, 12, tzinfo=PST)
    assert only_until.from_date == datetime(2026, 11, 8, 12, tzinfo=PST)
    only_since = report_window(NOW, timedelta(days=1), since=date(2026, 11, 20))
    assert (only_since.from_date.date(), only_since.to_date) == (date(2026, 11, 20), NOW)


def test_report_window_refuses_a_window_that_ends_before_it_starts() -> None:
    with pytest.raises(UsageError, match="--since and --until"):
        report_window(NOW, timedelta(days=1), since=date(2026, 11, 5), until=date(2026, 11, 1))


def test_report_window_needs_an_aware_run_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        report_window(datetime(2026, 11, 27), timedelta(days=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27", date(2026, 11, 27)),
        ("2026-11-27-08:00", datetime(2026, 11, 27, tzinfo=PST)),
        ("2026-11-27T06:15", datetime(2026, 11, 27, 6, 15)),
        ("2026-11-27T06:15:00+00:00", datetime(2026, 11, 27, 6, 15, tzinfo=UTC)),
    ],
)
def test_parse_bound_reads_since_and_until(text: str, expected: date | datetime) -> None:
    assert parse_bound(text) == expected


def test_parse_bound_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_bound("last tuesday")


# ---------------------------------------------------------------- the streaming parser


def parse_bytes(body: bytes, chunk: int = 65536) -> list[dict[str, Any]]:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return list(parse_entries(ReportStream(chunks), where="report T"))


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"Report_Entry": []}', b'{"Report_Entry": null}', b"  \n{ }\n", b"\xef\xbb\xbf{}"],
)
def test_empty_reports_have_no_entries(body: bytes) -> None:
    assert parse_bytes(body) == []


def test_entries_keep_exact_numbers_and_survive_any_chunking() -> None:
    body = json.dumps({"Report_Entry": [*DEPOSITS, {"Deposit_ID": "DEP-3", "n": 7}]}).encode()
    expected = [
        {"Deposit_ID": "DEP-1", "Deposit_Amount": Decimal("12.5")},
        {"Deposit_ID": "DEP-2", "Deposit_Amount": "8420.75"},
        {"Deposit_ID": "DEP-3", "n": 7},
    ]
    for chunk in (1, 7, 65536):
        entries = parse_bytes(b"\xef\xbb\xbf" + body, chunk)
        assert entries == expected
        assert isinstance(entries[0]["Deposit_Amount"], Decimal)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "is empty"),
        (b"Service Unavailable", "is not a JSON report (starts 'Service Unavailable')"),
        (b"[1, 2]", "is not a JSON report"),
        (b'{"Report_Entry": {"Deposit_ID": "D"}}', "Report_Entry is not an array (dict)"),
        (b'{"error": "invalid request"}', "has no Report_Entry (keys: error)"),
        (b'{"Report_Entry": [{"Deposit_ID": "D"}, {"Deposit', "not valid JSON after 1 entries"),
        (b'{"Report_Entry": []} trailing', "not valid JSON after 0 entries"),
    ],
)
def test_a_body_that_is_not_a_report_is_report_invalid(body: bytes, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_bytes(body)
    assert caught.value.code == ErrorCode.REPORT_INVALID
    assert caught.value.exit_code == 1
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- fixture source


def test_fixture_source_reads_the_crons_file_from_the_folder(tmp_path: Path) -> None:
    (tmp_path / "clientDepositUpdate.json").write_text(json.dumps({"Report_Entry": DEPOSITS}))
    source = FixtureSource(tmp_path)
    entries = list(source.entries("clientDepositUpdate", "Client_Deposits", PROMPTS))
    assert [e["Deposit_ID"] for e in entries] == ["DEP-1", "DEP-2"]
    assert entries[0]["Deposit_Amount"] == Decimal("12.5")


def test_fixture_source_resolves_a_relative_path_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FixtureSource(Path("reports"))  # nothing there yet: not checked at construction
    folder = tmp_path / "later" / "reports"
    folder.mkdir(parents=True)
    (folder / "lspBillUpdateStatus.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "later")
    assert list(source.entries("lspBillUpdateStatus", "Supplier_Invoice_Payments", PROMPTS)) == []


def test_the_embedded_default_folder_serves_every_cron() -> None:
    # The fixtures ship inside the package, whatever the working directory.
    source = FixtureSource(PACKAGED_FIXTURES / "raas")
    for cron in ("clientDepositUpdate", "clientBillPaidStatus", "clientBillUnpaidStatus"):
        assert 8 <= len(list(source.entries(cron, "R", PROMPTS))) <= 15
    assert len(list(source.entries("lspBillUpdateStatus", "R", PROMPTS))) >= 8


# ---------------------------------------------------------------- Workday RaaS


@pytest.fixture
def workday() -> Iterator[FakeWorkday]:
    with FakeWorkday() as server:
        server.add_report("Client_Deposits", DEPOSITS)
        yield server


class Sleeps(list[float]):
    """An injected sleep: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_source(
    workday: FakeWorkday,
    auth: str = "basic",
    *,
    sleeps: Sleeps | None = None,
    secret: Any = None,
    clock: Any = time.monotonic,
    **config: Any,
) -> WorkdaySource:
    return WorkdaySource(
        workday.config(auth, **config),  # type: ignore[arg-type]
        secret or workday.secret,
        backoff_s=0.01,
        sleep=sleeps if sleeps is not None else Sleeps(),
        clock=clock,
    )


def fetch(source: WorkdaySource, report: str = "Client_Deposits") -> list[dict[str, Any]]:
    return list(source.entries("clientDepositUpdate", report, PROMPTS))


def assert_no_secrets(text: str, workday: FakeWorkday) -> None:
    for value in (workday.password, workday.client_secret, workday.refresh_token):
        assert value not in text


def test_basic_auth_fetches_the_report_with_prompts(workday: FakeWorkday) -> None:
    entries = fetch(make_source(workday))
    assert entries == [
        {"Deposit_ID": "DEP-1", "Deposit_Amount": Decimal("12.5")},
        {"Deposit_ID": "DEP-2", "Deposit_Amount": "8420.75"},
    ]
    (request,) = workday.report_requests
    assert request.path == "/ccx/service/customreport2/acme_uat/ISU_Accounting/Client_Deposits"
    assert request.query == {
        "format": "json",
        "From_Date": "2026-11-26-08:00",
        "To_Date": "2026-11-27-08:00",
    }
    assert request.auth == "basic"


def test_report_names_are_quoted_in_the_url(workday: FakeWorkday) -> None:
    workday.add_report("Client Deposits (EMEA)", [{"Deposit_ID": "DEP-9"}])
    assert fetch(make_source(workday), "Client Deposits (EMEA)") == [{"Deposit_ID": "DEP-9"}]


def test_a_wrong_password_is_auth_failed_without_retrying(
    workday: FakeWorkday, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = {"env:WORKDAY_USER": workday.username, "env:WORKDAY_PASSWORD": "not-the-password"}
    sleeps = Sleeps()
    source = make_source(workday, secret=wrong.__getitem__, sleeps=sleeps)
    with pytest.raises(SourceError) as caught:
        fetch(source)
    assert caught.value.code == ErrorCode.AUTH_FAILED
    assert "HTTP 401" in str(caught.value)
    assert "Invalid username or password" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    assert len(workday.report_requests) == 1 and sleeps == []
    assert "not-the-password" not in caplog.text


def test_forbidden_is_auth_failed(workday: FakeWorkday) -> None:
    workday.script(Reply.fault("The task submitted is not authorized.", status=403))
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday))
    assert caught.value.code == ErrorCode.AUTH_FAILED
    assert "HTTP 403" in str(caught.value) and "not authorized" in str(caught.value)


def test_oauth_token_is_cached_across_fetches(workday: FakeWorkday) -> None:
    source = make_source(workday, "oauth")
    assert fetch(source) == fetch(source)
    assert len(workday.token_requests) == 1
    assert workday.token_requests[0].query == {"grant_type": "refresh_token"}
    assert [r.auth for r in workday.report_requests] == ["bearer", "bearer"]


def test_oauth_token_is_refreshed_shortly_before_it_expires(workday: FakeWorkday) -> None:
    workday.token_ttl_s = 600
    now = [1000.0]
    source = make_source(workday, "oauth", clock=lambda: now[0])
    fetch(source)
    now[0] += 600 - 120  # well inside the lifetime: cached
    fetch(source)
    assert len(workday.token_requests) == 1
    now[0] += 90  # 30 s before expiry: inside the margin, so refreshed before the call
    fetch(source)
    assert len(workday.token_requests) == 2
    assert [r.status for r in workday.report_requests] == [200, 200, 200]


def test_oauth_refreshes_once_and_retries_on_401(
    workday: FakeWorkday, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_source(workday, "oauth")
    fetch(source)
    workday.revoke_tokens()
    assert len(fetch(source)) == 2
    assert len(workday.token_requests) == 2
    assert [r.status for r in workday.report_requests] == [200, 401, 200]
    # The tokens the fake issued never reach the logs.
    assert "Bearer" not in caplog.text


def test_oauth_gives_up_after_one_refresh(workday: FakeWorkday) -> None:
    source = make_source(workday, "oauth")
    fetch(source)
    workday.script(Reply(status=401, body=soap_fault("Invalid token")), Reply(status=401))
    with pytest.raises(SourceError) as caught:
        fetch(source)
    assert caught.value.code == ErrorCode.AUTH_FAILED
    assert len(workday.token_requests) == 2
    assert [r.status for r in workday.report_requests] == [200, 401, 401]


def test_a_refused_refresh_token_is_auth_failed(workday: FakeWorkday) -> None:
    stale = {**workday.env(), "WORKDAY_REFRESH_TOKEN": "revoked-refresh-token"}
    source = make_source(workday, "oauth", secret=lambda ref: stale[ref.removeprefix("env:")])
    with pytest.raises(SourceError) as caught:
        fetch(source)
    assert caught.value.code == ErrorCode.AUTH_FAILED
    assert "invalid_grant" in str(caught.value)
    assert workday.report_requests == []
    assert "revoked-refresh-token" not in str(caught.value)


def test_429_honours_retry_after(workday: FakeWorkday, caplog: pytest.LogCaptureFixture) -> None:
    workday.script(Reply.throttled(retry_after=7))
    sleeps = Sleeps()
    caplog.set_level(logging.INFO, logger="raasctl")
    assert len(fetch(make_source(workday, sleeps=sleeps))) == 2
    assert sleeps == [7.0]
    retries = [r for r in caplog.records if getattr(r, "code", None) == InfoCode.HTTP_RETRY]
    assert len(retries) == 1 and "HTTP 429" in retries[0].getMessage()


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert parse_retry_after("Fri, 27 Nov 2026 10:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_5xx_is_retried_with_backoff(workday: FakeWorkday) -> None:
    workday.script(Reply.fault("Internal error"), Reply(status=503, body="busy"))
    sleeps = Sleeps()
    assert len(fetch(make_source(workday, sleeps=sleeps))) == 2
    assert sleeps == [0.01, 0.02]  # backoff_s, doubling
    assert [r.status for r in workday.report_requests] == [500, 503, 200]


def test_retries_exhausted_shows_the_soap_faultstring(workday: FakeWorkday) -> None:
    fault = "Processing error occurred. The report ran out of time."
    workday.script(*[Reply.fault(fault)] * 3)
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday, retries=2))
    assert caught.value.code == ErrorCode.SOURCE_FAILED
    assert str(caught.value) == (
        f"Workday report Client_Deposits failed with HTTP 500 after 3 attempts: {fault}"
    )
    assert len(workday.report_requests) == 3


def test_a_client_error_is_not_retried_and_shows_the_fault(workday: FakeWorkday) -> None:
    workday.script(Reply.fault("Validation error occurred. Invalid date: 2026-13-01", status=400))
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday))
    assert "HTTP 400" in str(caught.value) and "Invalid date: 2026-13-01" in str(caught.value)
    assert len(workday.report_requests) == 1


def test_a_soap_fault_with_status_200_is_report_invalid(workday: FakeWorkday) -> None:
    workday.script(Reply(body=soap_fault("Report prompts are not valid"), content_type="text/xml"))
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday))
    assert caught.value.code == ErrorCode.REPORT_INVALID
    assert "SOAP fault: Report prompts are not valid" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("Service Unavailable", "is not a JSON report (starts 'Service Unavailable')"),
        ("<html><body><h1>Gateway</h1><p>Try later</p></body></html>", "markup: Gateway Try later"),
        ('{"Report_Entry": [{"Deposit_ID": "DEP-1"}', "not valid JSON after 1 entries"),
    ],
)
def test_a_body_that_is_not_json_is_report_invalid(
    workday: FakeWorkday, body: str, shown: str
) -> None:
    workday.script(Reply(body=body, content_type="text/html"))
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday))
    assert caught.value.code == ErrorCode.REPORT_INVALID and caught.value.exit_code == 1
    assert shown in str(caught.value)


def test_a_slow_report_times_out_and_is_retried(workday: FakeWorkday) -> None:
    workday.script(Reply(delay_s=2))
    sleeps = Sleeps()
    started = time.monotonic()
    assert len(fetch(make_source(workday, sleeps=sleeps, read_timeout_s=0.2, retries=1))) == 2
    assert time.monotonic() - started < 1.5
    assert len(sleeps) == 1


def test_a_timeout_on_every_attempt_is_a_source_error(workday: FakeWorkday) -> None:
    workday.script(Reply(delay_s=2), Reply(delay_s=2))
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday, read_timeout_s=0.2, retries=1))
    assert caught.value.code == ErrorCode.SOURCE_FAILED
    assert "after 2 attempts" in str(caught.value) and "timed out" in str(caught.value)


def test_a_stall_mid_report_fails_after_the_entries_already_read(workday: FakeWorkday) -> None:
    workday.add_generated_report("Big", 2000, entries_per_chunk=100)
    workday.script(Reply(stall_s=3))
    received = []
    with pytest.raises(SourceError) as caught:
        for entry in make_source(workday, read_timeout_s=0.3).entries("c", "Big", PROMPTS):
            received.append(entry)
    assert len(received) == 100  # the first chunk arrived and was handed on at once
    assert "lost while reading report Big after 100 entries" in str(caught.value)
    assert "timed out" in str(caught.value)


def test_an_unreachable_workday_is_retried_then_fails(workday: FakeWorkday) -> None:
    port = closed_port()
    sleeps = Sleeps()
    source = make_source(workday, sleeps=sleeps, base_url=f"http://127.0.0.1:{port}", retries=2)
    with pytest.raises(SourceError) as caught:
        fetch(source)
    assert caught.value.code == ErrorCode.SOURCE_FAILED
    assert "cannot reach Workday for report Client_Deposits after 3 attempts" in str(caught.value)
    assert f":{port}" not in str(caught.value)  # a reason, not the URL
    assert sleeps == [0.01, 0.02]


def test_a_tls_failure_is_not_retried(workday: FakeWorkday) -> None:
    # Speaking TLS to a plain-HTTP port fails the handshake: a certificate or protocol
    # problem that another attempt cannot fix.
    sleeps = Sleeps()
    source = make_source(workday, sleeps=sleeps, base_url=f"https://127.0.0.1:{workday.port}")
    with pytest.raises(SourceError) as caught:
        fetch(source)
    assert str(caught.value).startswith("cannot call Workday for report Client_Deposits: SSLError")
    assert sleeps == []


def test_secrets_never_appear_in_errors_or_logs(
    workday: FakeWorkday, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for auth in ("basic", "oauth"):
        workday.script(Reply.throttled(1), Reply.fault("boom"))
        with pytest.raises(SourceError) as caught:
            fetch(make_source(workday, auth, retries=1))
        assert_no_secrets(str(caught.value), workday)
    assert_no_secrets(caplog.text, workday)


def test_an_abandoned_report_releases_its_connection(workday: FakeWorkday) -> None:
    workday.add_generated_report("Big", 50_000)
    source = make_source(workday)
    entries = source.entries("c", "Big", PROMPTS)
    assert next(iter(entries))["Deposit_ID"] == "DEP-GEN-0000001"
    entries.close()  # type: ignore[attr-defined]
    assert fetch(source) == fetch(source)  # the session still works afterwards


class RecordingSession(requests.Session):
    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_close_leaves_a_session_it_was_given_to_its_owner(workday: FakeWorkday) -> None:
    session = RecordingSession()
    source = WorkdaySource(workday.config(), workday.secret, session=session)
    assert len(fetch(source)) == 2
    source.close()
    assert session.closed == 0


def test_soap_fault_text_reads_soap_1_1_1_2_and_cut_off_bodies() -> None:
    assert soap_fault_text(soap_fault("Invalid user").encode()) == "Invalid user"
    soap12 = (
        b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
        b"<env:Fault><env:Reason><env:Text>Server busy</env:Text></env:Reason></env:Fault>"
        b"</env:Body></env:Envelope>"
    )
    assert soap_fault_text(soap12) == "Server busy"
    assert soap_fault_text(b"<a><faultstring>Cut short</faultstring><detail>") == "Cut short"
    assert soap_fault_text(b"<html><body>hi</body></html>") is None


def test_an_error_page_echoing_the_basic_header_is_redacted(workday: FakeWorkday) -> None:
    import base64

    from raasctl.redaction import redact

    header = base64.b64encode(f"{workday.username}:{workday.password}".encode()).decode()
    workday.script(Reply(400, body=f"<html>Bad request. Authorization: Basic {header}</html>"))
    with pytest.raises(SourceError) as caught:
        fetch(make_source(workday))
    # The page did echo it, and the error is scrubbed at birth: no exception, output or log
    # carries it.
    assert "Authorization: Basic ***" in str(caught.value)
    assert header not in str(caught.value) and header not in redact(str(caught.value))
