"""The source contract: what a run relies on when it reads a report, stated once and run
against both adapters.

The fixture source reads files from a folder in tmp_path; the Workday source fetches from
the fake Workday (tests/workday_server.py) on 127.0.0.1 with Basic auth. Each harness serves
the same bytes its own way (a file, a RaaS response), so every test below asserts the same
entries, in the same order, with the same types, and the same errors of both.

Where they legitimately differ the harness says so: how an error names the report (the
fixture's path, "Workday report <name>"), and that Workday recognises markup (a SOAP fault
or an HTML page) where the fixture source sees only "not a JSON report".
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from workday_server import GENERATORS, FakeWorkday, deposit_entry, report_chunks

from raasctl.codes import ErrorCode
from raasctl.dates import report_window
from raasctl.errors import SourceError
from raasctl.jobs import JOBS
from raasctl.sources.base import ReportEntry, Source, Unreadable
from raasctl.sources.fixtures import FixtureSource
from raasctl.sources.workday import WorkdaySource

CRONS = tuple(JOBS)
PROMPTS = report_window(
    datetime(2026, 11, 27, 10, 30, tzinfo=timezone(timedelta(hours=-8))), timedelta(days=1)
)


@dataclass
class Harness:
    kind: str
    source: Source
    # Serve a report for (cron, report): its body is the pieces the factory yields, made as
    # they are read (so a huge body is never held, by the test either).
    serve_chunks: Callable[[str, str, Callable[[], Iterable[bytes]]], None]
    where: Callable[[str, str], str]  # how errors name the report of (cron, report)
    sees_markup: bool  # tells a SOAP fault or an HTML page from other text that is not JSON

    def serve(self, cron: str, body: bytes) -> None:
        self.serve_chunks(cron, JOBS[cron].report, lambda: [body])

    def entries(self, cron: str) -> Iterator[ReportEntry]:
        return self.source.entries(cron, JOBS[cron].report, PROMPTS)

    def named(self, cron: str) -> str:
        return self.where(cron, JOBS[cron].report)


def _fixture_harness(tmp_path: Path) -> Iterator[Harness]:
    # Made when the first report is served: a missing report is a missing folder too.
    folder = tmp_path / "raas"
    source = FixtureSource(folder)

    def serve_chunks(cron: str, report: str, chunks: Callable[[], Iterable[bytes]]) -> None:
        folder.mkdir(exist_ok=True)
        with source.file_for(cron).open("wb") as file:
            for chunk in chunks():
                file.write(chunk)

    yield Harness(
        "fixtures",
        source,
        serve_chunks,
        lambda cron, report: str(source.file_for(cron)),
        sees_markup=False,
    )
    source.close()


def _workday_harness() -> Iterator[Harness]:
    with FakeWorkday() as workday:
        source = WorkdaySource(
            workday.config("basic"), workday.secret, backoff_s=0.01, sleep=lambda _: None
        )

        yield Harness(
            "workday",
            source,
            lambda cron, report, chunks: workday.add_streamed_report(report, chunks),
            lambda cron, report: f"Workday report {report}",
            sees_markup=True,
        )
        source.close()


@pytest.fixture(params=["fixtures", "workday"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "fixtures":
        yield from _fixture_harness(tmp_path)
    else:
        yield from _workday_harness()


def typed(value: Any) -> Any:
    """The value with the type of every scalar beside it: Decimal("12.5") == 12.5 in Python,
    and an amount that came back a float would already have lost digits."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def reference(body: bytes) -> list[dict[str, Any]]:
    """The entries as the standard library reads the same body, numbers kept exact."""
    entries: list[dict[str, Any]] = json.loads(body, parse_float=Decimal)["Report_Entry"]
    return entries


# ---------------------------------------------------------------- entries


@pytest.mark.parametrize("cron", CRONS)
def test_the_same_report_yields_the_same_entries_in_the_same_order(
    harness: Harness, cron: str
) -> None:
    entries = [GENERATORS[cron](n) for n in range(1, 1201)]
    # Several pieces, split inside entries: neither adapter may rely on where a piece ends.
    body = b"".join(report_chunks(entries, entries_per_chunk=500))
    pieces = [body[i : i + 7001] for i in range(0, len(body), 7001)]
    harness.serve_chunks(cron, JOBS[cron].report, lambda: pieces)

    got = list(harness.entries(cron))

    assert len(got) == 1200
    assert typed(got) == typed(reference(body))


DEPOSITS_WITH_QUIRKS = b"""{"Report_Entry": [
  {"Deposit_ID": "DEP-1", "Deposit_Amount": 1234.50, "Deposit_Date": "2026-11-27-08:00",
   "Applied_Invoices": "INV-1; INV-2", "Customer": "Soci\\u00e9t\\u00e9 G\\u00e9n\\u00e9rale",
   "Company": null},
  {"Deposit_ID": 42, "Deposit_Amount": "8420.75", "Deposit_Date": "2026-11-27+05:30"},
  {"Deposit_ID": "DEP-3", "Deposit_Amount": 12345678901234567890.12,
   "Deposit_Date": "2026-11-27", "Applied_Invoices": "INV-9", "Deposit_Status": ""},
  {"Deposit_ID": "DEP-4", "Deposit_Amount": 7, "Deposit_Date": "2026-11-27T00:00:00.000-08:00",
   "Applied_Invoices": null}
]}"""
PAYMENTS_WITH_QUIRKS = b"""{"Report_Entry": [
  {"Payment_ID": "SPAY-1", "On_Hold": "1", "Payment_Date": "2026-11-27+01:00",
   "Supplier_Invoices_group": [
     {"Supplier_Invoice_ID": "SI-1", "Amount_Paid": 1180.4, "Invoice_Status": "Paid"},
     {"Supplier_Invoice_ID": "SI-2", "Amount_Paid": "4250.00", "Invoice_Number": null}]},
  {"Payment_ID": "SPAY-2", "On_Hold": "0", "Supplier_Invoices_group": []},
  {"Payment_ID": "SPAY-3",
   "Supplier_Invoices_group": [{"Supplier_Invoice_ID": "SI-3", "Amount_Paid": 9600.00}]}
]}"""


@pytest.mark.parametrize("bom", [False, True], ids=["plain", "byte-order-mark"])
def test_workdays_quirks_reach_the_job_unchanged(harness: Harness, bom: bool) -> None:
    prefix = b"\xef\xbb\xbf" if bom else b""
    harness.serve("clientDepositUpdate", prefix + DEPOSITS_WITH_QUIRKS)
    harness.serve("lspBillUpdateStatus", prefix + PAYMENTS_WITH_QUIRKS)

    deposits = list(harness.entries("clientDepositUpdate"))
    payments = list(harness.entries("lspBillUpdateStatus"))

    # As written: numbers exact (Decimal or int), numeric strings, "0"/"1", dates with their
    # offsets, "; "-joined values, group arrays (also empty), null kept apart from missing.
    assert typed(deposits) == typed(
        [
            {
                "Deposit_ID": "DEP-1",
                "Deposit_Amount": Decimal("1234.50"),
                "Deposit_Date": "2026-11-27-08:00",
                "Applied_Invoices": "INV-1; INV-2",
                "Customer": "Société Générale",
                "Company": None,
            },
            {"Deposit_ID": 42, "Deposit_Amount": "8420.75", "Deposit_Date": "2026-11-27+05:30"},
            {
                "Deposit_ID": "DEP-3",
                "Deposit_Amount": Decimal("12345678901234567890.12"),
                "Deposit_Date": "2026-11-27",
                "Applied_Invoices": "INV-9",
                "Deposit_Status": "",
            },
            {
                "Deposit_ID": "DEP-4",
                "Deposit_Amount": 7,
                "Deposit_Date": "2026-11-27T00:00:00.000-08:00",
                "Applied_Invoices": None,
            },
        ]
    )
    assert typed(payments) == typed(
        [
            {
                "Payment_ID": "SPAY-1",
                "On_Hold": "1",
                "Payment_Date": "2026-11-27+01:00",
                "Supplier_Invoices_group": [
                    {
                        "Supplier_Invoice_ID": "SI-1",
                        "Amount_Paid": Decimal("1180.4"),
                        "Invoice_Status": "Paid",
                    },
                    {
                        "Supplier_Invoice_ID": "SI-2",
                        "Amount_Paid": "4250.00",
                        "Invoice_Number": None,
                    },
                ],
            },
            {"Payment_ID": "SPAY-2", "On_Hold": "0", "Supplier_Invoices_group": []},
            {
                "Payment_ID": "SPAY-3",
                "Supplier_Invoices_group": [
                    {"Supplier_Invoice_ID": "SI-3", "Amount_Paid": Decimal("9600.00")}
                ],
            },
        ]
    )
    # And what the jobs make of them: the same payloads whichever source read the report.
    deposit_payloads = [
        mapped.payload
        for position, raw in enumerate(deposits, 1)
        for mapped in JOBS["clientDepositUpdate"].map_entry(raw, position)
    ]
    assert [
        (p["deposit_id"], p["amount"], p["deposit_date"], p["applied_invoices"], p["status"])
        for p in deposit_payloads
    ] == [
        ("DEP-1", "1234.50", "2026-11-27", ["INV-1", "INV-2"], None),
        ("42", "8420.75", "2026-11-27", [], None),
        ("DEP-3", "12345678901234567890.12", "2026-11-27", ["INV-9"], None),
        ("DEP-4", "7", "2026-11-27", [], None),
    ]
    payment_payloads = [
        mapped.payload
        for position, raw in enumerate(payments, 1)
        for mapped in JOBS["lspBillUpdateStatus"].map_entry(raw, position)
    ]
    assert [
        (p["supplier_invoice_id"], p["on_hold"], p["payment_date"], p["amount_paid"])
        for p in payment_payloads
    ] == [
        ("SI-1", True, "2026-11-27", "1180.4"),
        ("SI-2", True, "2026-11-27", "4250.00"),
        ("SI-3", False, None, "9600.00"),
    ]


@pytest.mark.parametrize(
    "body", [b"{}", b'{"Report_Entry": []}', b'{"Report_Entry": null}', b"  \n{ }\n"]
)
def test_an_empty_report_has_no_entries(harness: Harness, body: bytes) -> None:
    harness.serve("clientDepositUpdate", body)

    assert list(harness.entries("clientDepositUpdate")) == []


def test_a_large_report_streams_in_flat_memory(harness: Harness) -> None:
    """The report is never held whole: memory stays far below the body's size."""
    count = 20_000
    # Entries as ready-made JSON text keep the (also traced) fake Workday's thread cheap.
    template = json.dumps(deposit_entry(0)).replace("DEP-GEN-0000000", "DEP-GEN-{n:07d}")

    def body() -> Iterable[bytes]:
        return report_chunks(template.replace("{n:07d}", f"{n:07d}") for n in range(1, count + 1))

    harness.serve_chunks("clientDepositUpdate", "Client_Deposits", body)
    tracemalloc.start()
    try:
        seen = 0
        last = None
        for entry in harness.entries("clientDepositUpdate"):
            seen += 1
            last = entry
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count and last is not None and last["Deposit_ID"] == "DEP-GEN-0020000"
    # The body is ~6.6 MB and the parsed entries held together would be several times that;
    # streaming keeps the peak near 1.2 MB whatever the count (200,000 measure the same).
    assert peak < 3 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "entries_first", "message"),
    [
        (b"", 0, "is empty"),
        (b"Service Unavailable", 0, "is not a JSON report (starts 'Service Unavailable')"),
        (b"Invoice_ID,Amount\nCI-1,10\n", 0, "is not a JSON report"),
        (b"[1, 2]", 0, "is not a JSON report"),
        (b'"Report_Entry"', 0, "is not a JSON report"),
        (b'{"error": "invalid request"}', 0, "has no Report_Entry (keys: error)"),
        (b'{"Report_Entry": {"Deposit_ID": "D"}}', 0, "Report_Entry is not an array (dict)"),
        (b'{"Report_Entry": [{"Deposit_ID": "D"}, {"Depos', 1, "not valid JSON after 1 entries"),
        (b'{"Report_Entry": []} trailing', 0, "not valid JSON after 0 entries"),
        (b"<html><body><h1>Gateway</h1></body></html>", 0, None),  # see sees_markup
    ],
    ids=[
        "empty",
        "text",
        "csv",
        "array",
        "string",
        "no-entries",
        "entries-object",
        "cut-off",
        "trailing",
        "html",
    ],
)
def test_a_body_that_is_not_a_report_is_report_invalid_naming_it(
    harness: Harness, body: bytes, entries_first: int, message: str | None
) -> None:
    harness.serve("clientBillPaidStatus", body)
    received = []

    with pytest.raises(SourceError) as caught:
        for entry in harness.entries("clientBillPaidStatus"):
            received.append(entry)

    assert caught.value.code == ErrorCode.REPORT_INVALID
    assert caught.value.exit_code == 1
    assert len(received) == entries_first  # entries before the fault were handed on
    text = str(caught.value)
    assert harness.named("clientBillPaidStatus") in text
    assert "\n" not in text
    if message is None:
        expected = "returned markup: Gateway" if harness.sees_markup else "is not a JSON report"
        assert expected in text
    else:
        assert message in text


def test_a_bad_entry_is_unreadable_and_the_entries_after_it_come_through(
    harness: Harness,
) -> None:
    body = (
        b'{"Report_Entry": [{"Invoice_ID": "I-1"}, 42, {"Invoice_ID": "I-2", "n": '
        + b"9" * 5000
        + b'}, {"Invoice_ID": "I-3", "deep": '
        + b"[" * 100
        + b"]" * 100
        + b'}, {"Invoice_ID": "I-4"}]}'
    )
    harness.serve("clientBillPaidStatus", body)

    entries = list(harness.entries("clientBillPaidStatus"))

    assert entries[0] == {"Invoice_ID": "I-1"} and entries[4] == {"Invoice_ID": "I-4"}
    assert [e.reason for e in entries[1:4] if isinstance(e, Unreadable)] == [
        "entry is not an object (int)",
        "entry has a number with too many digits",
        "entry is nested deeper than 64 levels",
    ]


@pytest.mark.parametrize(
    ("cron", "another_served"),
    [("clientBillPaidStatus", False), ("lspBillUpdateStatus", True)],
    ids=["nothing-served", "another-served"],
)
def test_a_missing_report_is_a_source_error_naming_it(
    harness: Harness, cron: str, another_served: bool
) -> None:
    if another_served:  # the folder (or the tenant's reports) exist, just not this one
        harness.serve("clientDepositUpdate", b"{}")

    with pytest.raises(SourceError) as caught:
        list(harness.entries(cron))

    assert caught.value.code == ErrorCode.SOURCE_FAILED
    assert caught.value.exit_code == 1
    assert harness.named(cron) in str(caught.value)
    assert "not found" in str(caught.value)


def test_close_is_idempotent(harness: Harness) -> None:
    harness.serve("clientDepositUpdate", b'{"Report_Entry": [{"Deposit_ID": "D-1"}]}')
    assert list(harness.entries("clientDepositUpdate")) == [{"Deposit_ID": "D-1"}]

    harness.source.close()
    harness.source.close()
