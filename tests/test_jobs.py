"""The four cron jobs: entry models that accept Workday's quirks, mappers, aliases, keys,
and the shipped fixtures."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from raasctl.config import BUILTIN_CRONS, CRON_NAMES
from raasctl.envelope import entry_key
from raasctl.errors import ConfigError
from raasctl.jobs import JOBS, EntryInvalid, Job, MappedPayload, map_report
from raasctl.sources.stream import iter_report_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "raasctl" / "fixtures"

DEPOSIT_FIELDS = {
    "deposit_id", "deposit_reference", "customer", "customer_id", "company", "currency",
    "amount", "deposit_date", "status", "applied_invoices",
}  # fmt: skip
INVOICE_FIELDS = {
    "invoice_id", "invoice_number", "customer_id", "currency", "total_amount", "amount_due",
    "payment_status", "payment_date",
}  # fmt: skip
LSP_FIELDS = {
    "payment_id", "supplier", "supplier_id", "currency", "payment_date", "payment_status",
    "on_hold", "supplier_invoice_id", "invoice_number", "amount_paid", "invoice_status",
}  # fmt: skip

DEPOSIT = {
    "Deposit_ID": "DEP-2026-004811",
    "Deposit_Reference": "WIRE 20261127 NORTHWIND TRADERS",
    "Customer": "Northwind Traders",
    "Customer_ID": "CUS-10023",
    "Company": "Acme Holdings US",
    "Currency": "USD",
    "Deposit_Amount": Decimal("12500.00"),
    "Deposit_Date": "2026-11-27-08:00",
    "Deposit_Status": "Deposited",
    "Applied_Invoices": "INV-2026-10482; INV-2026-10517",
}
INVOICE = {
    "Invoice_ID": "CI-2026-0010482",
    "Invoice_Number": "INV-2026-10482",
    "Customer_ID": "CUS-10023",
    "Currency": "USD",
    "Total_Amount": Decimal("7500.00"),
    "Amount_Due": 0,
    "Payment_Status": "Paid",
    "Payment_Date": "2026-11-27-08:00",
}
PAYMENT = {
    "Payment_ID": "SPAY-2026-007701",
    "Supplier": "Lingua Franca Translations GmbH",
    "Supplier_ID": "SUP-000412",
    "Currency": "EUR",
    "Payment_Date": "2026-11-27+01:00",
    "Payment_Status": "Complete",
    "On_Hold": "0",
    "Supplier_Invoices_group": [
        {
            "Supplier_Invoice_ID": "SI-2026-031150",
            "Invoice_Number": "LFT-88121",
            "Amount_Paid": "4250.00",
            "Invoice_Status": "Paid",
        },
        {
            "Supplier_Invoice_ID": "SI-2026-031162",
            "Invoice_Number": "LFT-88140",
            "Amount_Paid": Decimal("1180.4"),
            "Invoice_Status": "Paid",
        },
    ],
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of an entry with columns changed; a value of ... removes the column."""
    entry = {**base, **changes}
    return {k: v for k, v in entry.items() if v is not ...}


def mapped(cron: str, entry: dict[str, Any], columns: dict[str, str] | None = None) -> list[Any]:
    return list(map_report(JOBS[cron], [entry], columns or {}))


def payloads(cron: str, entry: dict[str, Any], columns: dict[str, str] | None = None) -> list[dict]:
    results = mapped(cron, entry, columns)
    assert all(isinstance(r, MappedPayload) for r in results), results
    return [r.payload for r in results]


def only_payload(cron: str, entry: dict[str, Any]) -> dict[str, Any]:
    (payload,) = payloads(cron, entry)
    return payload


def invalid(cron: str, entry: Any, columns: dict[str, str] | None = None) -> EntryInvalid:
    (result,) = list(map_report(JOBS[cron], [entry], columns or {}))
    assert isinstance(result, EntryInvalid), result
    return result


# ---------------------------------------------------------------- registry


def test_the_registry_holds_the_four_crons_with_their_built_in_reports() -> None:
    assert tuple(JOBS) == CRON_NAMES
    for name, job in JOBS.items():
        assert isinstance(job, Job)
        assert job.name == name
        assert job.report == BUILTIN_CRONS[name].report


# ---------------------------------------------------------------- payload contract


def test_deposit_payload_has_the_ledger_fields() -> None:
    assert only_payload("clientDepositUpdate", DEPOSIT) == {
        "deposit_id": "DEP-2026-004811",
        "deposit_reference": "WIRE 20261127 NORTHWIND TRADERS",
        "customer": "Northwind Traders",
        "customer_id": "CUS-10023",
        "company": "Acme Holdings US",
        "currency": "USD",
        "amount": "12500.00",
        "deposit_date": "2026-11-27",
        "status": "Deposited",
        "applied_invoices": ["INV-2026-10482", "INV-2026-10517"],
    }


@pytest.mark.parametrize("cron", ["clientBillPaidStatus", "clientBillUnpaidStatus"])
def test_invoice_payload_has_the_ledger_fields(cron: str) -> None:
    assert only_payload(cron, INVOICE) == {
        "invoice_id": "CI-2026-0010482",
        "invoice_number": "INV-2026-10482",
        "customer_id": "CUS-10023",
        "currency": "USD",
        "total_amount": "7500.00",
        "amount_due": "0",
        "payment_status": "Paid",
        "payment_date": "2026-11-27",
    }


def test_lsp_yields_one_payload_per_supplier_invoice() -> None:
    results = mapped("lspBillUpdateStatus", PAYMENT)
    assert [r.entity_id for r in results] == ["SI-2026-031150", "SI-2026-031162"]
    assert results[1].payload == {
        "payment_id": "SPAY-2026-007701",
        "supplier": "Lingua Franca Translations GmbH",
        "supplier_id": "SUP-000412",
        "currency": "EUR",
        "payment_date": "2026-11-27",
        "payment_status": "Complete",
        "on_hold": False,
        "supplier_invoice_id": "SI-2026-031162",
        "invoice_number": "LFT-88140",
        "amount_paid": "1180.4",
        "invoice_status": "Paid",
    }


@pytest.mark.parametrize(
    ("cron", "fields"),
    [
        ("clientDepositUpdate", DEPOSIT_FIELDS),
        ("clientBillPaidStatus", INVOICE_FIELDS),
        ("clientBillUnpaidStatus", INVOICE_FIELDS),
        ("lspBillUpdateStatus", LSP_FIELDS),
    ],
)
def test_a_minimal_entry_has_every_payload_field_as_null(cron: str, fields: set[str]) -> None:
    entry = {
        "clientDepositUpdate": {"Deposit_ID": "D-1"},
        "clientBillPaidStatus": {"Invoice_ID": "I-1"},
        "clientBillUnpaidStatus": {"Invoice_ID": "I-1"},
        "lspBillUpdateStatus": {
            "Payment_ID": "P-1",
            "Supplier_Invoices_group": [{"Supplier_Invoice_ID": "S-1"}],
        },
    }[cron]
    payload = only_payload(cron, entry)
    assert set(payload) == fields
    defaults = {"applied_invoices": [], "on_hold": False}
    ids = {"deposit_id", "invoice_id", "payment_id", "supplier_invoice_id"}
    assert {k: v for k, v in payload.items() if k not in ids} == {
        k: defaults.get(k) for k in fields - ids
    }
    json.dumps(payload)  # plain JSON: Decimals and dates are strings


# ---------------------------------------------------------------- quirks, table-driven


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        # amounts: numbers (Decimal from the streaming parser, int, float) or numeric strings
        ({"Deposit_Amount": Decimal("8420.75")}, "amount", "8420.75"),
        ({"Deposit_Amount": "8420.75"}, "amount", "8420.75"),
        ({"Deposit_Amount": " 4100.00 "}, "amount", "4100.00"),
        ({"Deposit_Amount": 1875000}, "amount", "1875000"),
        ({"Deposit_Amount": 4999.5}, "amount", "4999.5"),
        ({"Deposit_Amount": "-2300.00"}, "amount", "-2300.00"),
        ({"Deposit_Amount": None}, "amount", None),
        ({"Deposit_Amount": ""}, "amount", None),
        ({"Deposit_Amount": ...}, "amount", None),
        # dates: plain, with an offset, as a date-time; the date as written
        ({"Deposit_Date": "2026-11-27"}, "deposit_date", "2026-11-27"),
        ({"Deposit_Date": "2026-11-27-08:00"}, "deposit_date", "2026-11-27"),
        ({"Deposit_Date": "2026-11-28+11:00"}, "deposit_date", "2026-11-28"),
        ({"Deposit_Date": "2026-11-26T00:00:00.000-08:00"}, "deposit_date", "2026-11-26"),
        ({"Deposit_Date": None}, "deposit_date", None),
        ({"Deposit_Date": ...}, "deposit_date", None),
        # multi-valued: "; "-joined, unspaced, a JSON list, one value, blank, null, missing
        ({"Applied_Invoices": "A-1; A-2; A-3"}, "applied_invoices", ["A-1", "A-2", "A-3"]),
        ({"Applied_Invoices": "A-1;A-2"}, "applied_invoices", ["A-1", "A-2"]),
        ({"Applied_Invoices": ["A-1", "A-2"]}, "applied_invoices", ["A-1", "A-2"]),
        ({"Applied_Invoices": "A-1"}, "applied_invoices", ["A-1"]),
        ({"Applied_Invoices": "A-1; "}, "applied_invoices", ["A-1"]),
        ({"Applied_Invoices": ""}, "applied_invoices", []),
        ({"Applied_Invoices": None}, "applied_invoices", []),
        ({"Applied_Invoices": ...}, "applied_invoices", []),
        # text: numbers become text, blanks and null are missing
        ({"Customer_ID": 10077}, "customer_id", "10077"),
        ({"Customer_ID": "  CUS-1 "}, "customer_id", "CUS-1"),
        ({"Deposit_Reference": None}, "deposit_reference", None),
        ({"Deposit_Reference": "   "}, "deposit_reference", None),
        ({"Deposit_ID": 4811}, "deposit_id", "4811"),
        # columns the job does not read, groups included, are ignored
        ({"Reconciled": "1", "Deposit_Lines_group": [{"Line": "1"}]}, "status", "Deposited"),
    ],
)
def test_deposit_quirks(changes: dict[str, Any], field: str, expected: Any) -> None:
    assert only_payload("clientDepositUpdate", with_(DEPOSIT, **changes))[field] == expected


@pytest.mark.parametrize("cron", ["clientBillPaidStatus", "clientBillUnpaidStatus"])
@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"Amount_Due": "0.00"}, "amount_due", "0.00"),
        ({"Amount_Due": Decimal("2100.00")}, "amount_due", "2100.00"),
        ({"Amount_Due": None}, "amount_due", None),
        ({"Total_Amount": "1500"}, "total_amount", "1500"),
        ({"Payment_Date": None}, "payment_date", None),
        ({"Payment_Date": ""}, "payment_date", None),
        ({"Payment_Date": "2026-11-26+01:00"}, "payment_date", "2026-11-26"),
        ({"Payment_Status": "Partially Paid"}, "payment_status", "Partially Paid"),
        ({"Invoice_ID": 10533}, "invoice_id", "10533"),
    ],
)
def test_invoice_quirks(cron: str, changes: dict[str, Any], field: str, expected: Any) -> None:
    assert only_payload(cron, with_(INVOICE, **changes))[field] == expected


@pytest.mark.parametrize(
    ("on_hold", "expected"),
    [("1", True), ("0", False), (1, True), (0, False), (True, True), ("true", True),
     (None, False), ("", False), (..., False)],
)  # fmt: skip
def test_lsp_on_hold_accepts_workday_booleans(on_hold: Any, expected: bool) -> None:
    results = payloads("lspBillUpdateStatus", with_(PAYMENT, On_Hold=on_hold))
    assert [p["on_hold"] for p in results] == [expected, expected]


@pytest.mark.parametrize(
    ("group", "invoice_ids"),
    [
        ([], []),
        (None, []),
        (..., []),
        ({"Supplier_Invoice_ID": "SI-9"}, ["SI-9"]),  # a lone row written without its array
        ([{"Supplier_Invoice_ID": "SI-1"}, {"Supplier_Invoice_ID": 77}], ["SI-1", "77"]),
    ],
)
def test_lsp_group_shapes(group: Any, invoice_ids: list[str]) -> None:
    results = mapped("lspBillUpdateStatus", with_(PAYMENT, Supplier_Invoices_group=group))
    assert [r.payload["supplier_invoice_id"] for r in results] == invoice_ids
    assert [r.entity_id for r in results] == invoice_ids


def test_lsp_group_rows_take_amount_quirks_and_nulls() -> None:
    rows = [
        {"Supplier_Invoice_ID": "A", "Amount_Paid": "18500.00"},
        {"Supplier_Invoice_ID": "B", "Amount_Paid": None, "Invoice_Status": "Unpaid"},
        {"Supplier_Invoice_ID": "C", "Amount_Paid": 312000, "Memo": "ignored"},
    ]
    results = payloads("lspBillUpdateStatus", with_(PAYMENT, Supplier_Invoices_group=rows))
    assert [(p["amount_paid"], p["invoice_status"]) for p in results] == [
        ("18500.00", None),
        (None, "Unpaid"),
        ("312000", None),
    ]


def test_null_and_missing_columns_map_alike() -> None:
    missing = with_(DEPOSIT, Customer=..., Deposit_Amount=..., Applied_Invoices=...)
    null = with_(DEPOSIT, Customer=None, Deposit_Amount=None, Applied_Invoices=None)
    blank = with_(DEPOSIT, Customer="", Deposit_Amount="", Applied_Invoices="")
    assert mapped("clientDepositUpdate", missing) == mapped("clientDepositUpdate", null)
    assert mapped("clientDepositUpdate", null) == mapped("clientDepositUpdate", blank)


# ---------------------------------------------------------------- invalid entries


DEP, PAID, UNPAID, LSP = CRON_NAMES


def rows(*group: dict[str, Any]) -> dict[str, Any]:
    return with_(PAYMENT, Supplier_Invoices_group=list(group))


@pytest.mark.parametrize(
    ("cron", "entry", "field", "reason"),
    [
        (DEP, with_(DEPOSIT, Deposit_ID=...), "Deposit_ID", "field required"),
        (DEP, with_(DEPOSIT, Deposit_ID=None), "Deposit_ID", "field required"),
        (DEP, with_(DEPOSIT, Deposit_ID="  "), "Deposit_ID", "field required"),
        (DEP, with_(DEPOSIT, Deposit_Amount="12,500"), "Deposit_Amount", "not an amount: '12,500'"),
        (DEP, with_(DEPOSIT, Deposit_Amount="NaN"), "Deposit_Amount", "not an amount"),
        (DEP, with_(DEPOSIT, Deposit_Amount=True), "Deposit_Amount", "not an amount"),
        (DEP, with_(DEPOSIT, Deposit_Date="27/11/2026"), "Deposit_Date", "is not a Workday date"),
        (DEP, with_(DEPOSIT, Applied_Invoices={"a": 1}), "Applied_Invoices", "valid list"),
        (PAID, with_(INVOICE, Invoice_ID=...), "Invoice_ID", "field required"),
        (UNPAID, with_(INVOICE, Amount_Due="due"), "Amount_Due", "not an amount"),
        (LSP, with_(PAYMENT, Payment_ID=...), "Payment_ID", "field required"),
        (LSP, with_(PAYMENT, On_Hold="maybe"), "On_Hold", 'not a Workday boolean ("0" or "1")'),
        (
            LSP,
            with_(PAYMENT, Supplier_Invoices_group="SI-1"),
            "Supplier_Invoices_group",
            "valid list",
        ),
        (
            LSP,
            rows({"Supplier_Invoice_ID": "A"}, {"Invoice_Number": "X"}),
            "Supplier_Invoice_ID",
            "field required in Supplier_Invoices_group row 2",
        ),
        (
            LSP,
            rows({"Supplier_Invoice_ID": "A", "Amount_Paid": "x"}),
            "Amount_Paid",
            "not an amount: 'x' in Supplier_Invoices_group row 1",
        ),
    ],
)
def test_invalid_entries_name_the_field(
    cron: str, entry: dict[str, Any], field: str, reason: str
) -> None:
    result = invalid(cron, entry)
    assert result.position == 1
    assert result.field == field
    assert reason in result.reason
    assert str(result).startswith(f"entry 1: {field}: ")
    assert "\n" not in str(result)


def test_an_entry_that_is_not_an_object_is_invalid() -> None:
    result = invalid("clientDepositUpdate", ["DEP-1"])
    assert (result.field, str(result)) == (None, "entry 1: entry is not an object (list)")


def test_several_errors_report_the_first_and_count_the_rest() -> None:
    result = invalid("clientDepositUpdate", {"Deposit_Amount": "x", "Deposit_Date": "y"})
    assert str(result) == "entry 1: Deposit_ID: field required (+2 more)"


def test_an_invalid_entry_does_not_stop_the_others() -> None:
    entries = [
        DEPOSIT,
        with_(DEPOSIT, Deposit_ID="DEP-2"),
        with_(DEPOSIT, Deposit_ID=...),
        with_(DEPOSIT, Deposit_ID="DEP-4"),
        with_(DEPOSIT, Deposit_ID="DEP-5"),
        with_(DEPOSIT, Deposit_ID="DEP-6"),
        with_(DEPOSIT, Deposit_ID="DEP-7", Deposit_Amount="lots"),
        with_(DEPOSIT, Deposit_ID="DEP-8"),
    ]
    results = list(map_report(JOBS["clientDepositUpdate"], entries, {}))
    bad = [r for r in results if isinstance(r, EntryInvalid)]
    assert [str(r) for r in bad] == [
        "entry 3: Deposit_ID: field required",
        "entry 7: Deposit_Amount: not an amount: 'lots'",
    ]
    good = [r.entity_id for r in results if isinstance(r, MappedPayload)]
    assert good == ["DEP-2026-004811", "DEP-2", "DEP-4", "DEP-5", "DEP-6", "DEP-8"]


def test_positions_count_entries_not_payloads() -> None:
    entries = [PAYMENT, with_(PAYMENT, Supplier_Invoices_group=[]), with_(PAYMENT, Payment_ID=None)]
    results = list(map_report(JOBS["lspBillUpdateStatus"], entries, {}))
    assert len(results) == 3  # two payloads, nothing for the empty group, one invalid
    assert isinstance(results[2], EntryInvalid) and results[2].position == 3


def test_entry_invalid_survives_pickling() -> None:
    result = invalid("clientDepositUpdate", {})
    again = pickle.loads(pickle.dumps(result))
    assert (again.position, again.field, again.reason) == (1, "Deposit_ID", "field required")


def test_map_report_is_lazy() -> None:
    consumed: list[int] = []

    def entries() -> Iterator[dict[str, Any]]:
        for n in range(1, 1_000_000):
            consumed.append(n)
            yield with_(DEPOSIT, Deposit_ID=f"DEP-{n}")

    results = map_report(JOBS["clientDepositUpdate"], entries(), {})
    first = next(results)
    assert isinstance(first, MappedPayload) and first.entity_id == "DEP-1"
    assert consumed == [1]


# ---------------------------------------------------------------- aliases


def test_columns_map_our_names_to_the_reports_aliases() -> None:
    columns = {"Deposit_ID": "Deposit_WID", "Deposit_Amount": "Amount"}
    entry = with_(DEPOSIT, Deposit_ID=..., Deposit_Amount=..., Deposit_WID="W-1", Amount="10")
    (result,) = mapped("clientDepositUpdate", entry, columns)
    assert result.entity_id == "W-1"
    assert (result.payload["deposit_id"], result.payload["amount"]) == ("W-1", "10")


def test_an_aliased_column_is_read_only_under_its_alias() -> None:
    # Our own name no longer counts once the report's alias is configured.
    result = invalid("clientDepositUpdate", DEPOSIT, {"Deposit_ID": "Deposit_WID"})
    assert (result.field, result.reason) == ("Deposit_WID", "field required")


def test_group_and_row_columns_can_be_aliased() -> None:
    columns = {"Supplier_Invoices_group": "Invoices_group", "Supplier_Invoice_ID": "Invoice_WID"}
    entry = with_(
        PAYMENT,
        Supplier_Invoices_group=...,
        Invoices_group=[{"Invoice_WID": "W-1"}, {"Invoice_WID": "W-2", "Amount_Paid": "1.00"}],
    )
    assert [r.entity_id for r in mapped("lspBillUpdateStatus", entry, columns)] == ["W-1", "W-2"]
    broken = with_(entry, Invoices_group=[{"Supplier_Invoice_ID": "S-1"}])
    result = invalid("lspBillUpdateStatus", broken, columns)
    assert str(result) == "entry 1: Invoice_WID: field required in Invoices_group row 1"


def test_unknown_column_names_are_a_config_error_before_any_entry_is_read() -> None:
    def never() -> Iterator[dict[str, Any]]:
        raise AssertionError("entries must not be read")
        yield {}

    with pytest.raises(
        ConfigError, match=r"crons.clientDepositUpdate.columns: unknown column 'Amount'"
    ):
        map_report(JOBS["clientDepositUpdate"], never(), {"Amount": "Deposit_Amount"})


def test_every_job_lists_its_columns() -> None:
    assert "Supplier_Invoice_ID" in JOBS["lspBillUpdateStatus"].columns
    assert "Supplier_Invoices_group" in JOBS["lspBillUpdateStatus"].columns
    assert JOBS["clientBillPaidStatus"].columns == {
        "Invoice_ID", "Invoice_Number", "Customer_ID", "Currency", "Total_Amount",
        "Amount_Due", "Payment_Status", "Payment_Date",
    }  # fmt: skip


# ---------------------------------------------------------------- entry keys


def test_the_key_is_the_envelopes_entry_key() -> None:
    (result,) = mapped("clientDepositUpdate", DEPOSIT)
    assert result.key == entry_key("clientDepositUpdate", "DEP-2026-004811", result.payload)
    assert result.key.startswith("clientDepositUpdate:DEP-2026-004811:")


def dep(**changes: Any) -> dict[str, Any]:
    return with_(DEPOSIT, **changes)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (DEPOSIT, dict(DEPOSIT)),
        # The same content written two Workday ways is the same entry.
        (dep(Deposit_Amount="12500.00"), dep(Deposit_Amount=Decimal("12500.00"))),
        (dep(Deposit_Date="2026-11-27"), dep(Deposit_Date="2026-11-27-08:00")),
        (dep(Customer=None), dep(Customer=...)),
        (dep(Applied_Invoices="A; B"), dep(Applied_Invoices=["A", "B"])),
        (dep(Reconciled="1"), dep(Reconciled="0")),  # a column the job does not read
        (with_(PAYMENT, On_Hold="0"), with_(PAYMENT, On_Hold=...)),
    ],
)
def test_same_content_same_key(first: dict[str, Any], second: dict[str, Any]) -> None:
    cron = "lspBillUpdateStatus" if "Payment_ID" in first else "clientDepositUpdate"
    assert [r.key for r in mapped(cron, first)] == [r.key for r in mapped(cron, second)]


@pytest.mark.parametrize(
    ("cron", "first", "second"),
    [
        ("clientDepositUpdate", DEPOSIT, with_(DEPOSIT, Deposit_ID="DEP-2026-004812")),
        ("clientDepositUpdate", DEPOSIT, with_(DEPOSIT, Deposit_Amount="12500.01")),
        ("clientDepositUpdate", DEPOSIT, with_(DEPOSIT, Deposit_Status="Cleared")),
        ("clientDepositUpdate", DEPOSIT, with_(DEPOSIT, Applied_Invoices="INV-2026-10482")),
        ("clientBillPaidStatus", INVOICE, with_(INVOICE, Amount_Due="1.00")),
        ("lspBillUpdateStatus", PAYMENT, with_(PAYMENT, On_Hold="1")),
        # The same supplier invoice settled by two payments is two changes.
        ("lspBillUpdateStatus", PAYMENT, with_(PAYMENT, Payment_ID="SPAY-2026-007799")),
    ],
)
def test_different_entries_never_share_a_key(
    cron: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    first_keys = {r.key for r in mapped(cron, first)}
    second_keys = {r.key for r in mapped(cron, second)}
    assert first_keys and second_keys and not first_keys & second_keys


def test_the_same_change_is_a_different_key_in_another_cron() -> None:
    paid = mapped("clientBillPaidStatus", INVOICE)[0].key
    unpaid = mapped("clientBillUnpaidStatus", INVOICE)[0].key
    assert paid != unpaid


def test_payments_rows_get_distinct_keys() -> None:
    rows = [{"Supplier_Invoice_ID": f"SI-{n}", "Amount_Paid": "10.00"} for n in range(50)]
    results = mapped("lspBillUpdateStatus", with_(PAYMENT, Supplier_Invoices_group=rows))
    assert len({r.key for r in results}) == 50


# ---------------------------------------------------------------- shipped fixtures


REPORT_FIXTURES = sorted((FIXTURES / "raas").glob("*.json"))
MOCK_SEEDS = [
    ("clientDepositUpdate", FIXTURES / "client_deposits.json"),
    *[(path.stem, path) for path in sorted((FIXTURES / "mock").glob("*.json"))],
]


def map_file(cron: str, path: Path) -> tuple[list[dict[str, Any]], list[Any]]:
    entries = list(iter_report_file(path))
    return entries, list(map_report(JOBS[cron], entries, {}))


def test_there_is_a_report_fixture_and_a_mock_seed_per_cron() -> None:
    assert sorted(path.stem for path in REPORT_FIXTURES) == sorted(CRON_NAMES)
    assert sorted(cron for cron, _ in MOCK_SEEDS) == sorted(CRON_NAMES)


@pytest.mark.parametrize("path", REPORT_FIXTURES, ids=lambda p: p.stem)
def test_report_fixtures_are_valid_with_distinct_keys(path: Path) -> None:
    entries, results = map_file(path.stem, path)
    assert 8 <= len(entries) <= 15
    assert not [r for r in results if isinstance(r, EntryInvalid)]
    assert len({r.key for r in results}) == len(results)


@pytest.mark.parametrize(("cron", "path"), MOCK_SEEDS, ids=lambda v: getattr(v, "name", v))
def test_mock_seeds_are_valid_with_distinct_keys(cron: str, path: Path) -> None:
    entries, results = map_file(cron, path)
    assert not [r for r in results if isinstance(r, EntryInvalid)]
    assert len({r.key for r in results}) == len(results) >= 3
    if path.name == "client_deposits.json":
        assert len(entries) == 10  # the load-test seed: ten real-looking client deposits


def _values(entries: list[dict[str, Any]], column: str) -> list[Any]:
    found = []
    for entry in entries:
        found += [entry.get(column, ...)]
        for key, value in entry.items():
            if key.endswith("_group") and isinstance(value, list):
                found += [row.get(column, ...) for row in value if isinstance(row, dict)]
    return found


@pytest.mark.parametrize("path", REPORT_FIXTURES, ids=lambda p: p.stem)
def test_report_fixtures_exercise_workday_quirks(path: Path) -> None:
    entries = list(iter_report_file(path))
    amount_column, date_column = {
        "clientDepositUpdate": ("Deposit_Amount", "Deposit_Date"),
        "clientBillPaidStatus": ("Total_Amount", "Payment_Date"),
        "clientBillUnpaidStatus": ("Amount_Due", "Payment_Date"),
        "lspBillUpdateStatus": ("Amount_Paid", "Payment_Date"),
    }[path.stem]
    amounts = _values(entries, amount_column)
    assert any(isinstance(a, Decimal | int) for a in amounts), "an amount as a number"
    assert any(isinstance(a, str) for a in amounts), "an amount as a numeric string"
    dates = [d for d in _values(entries, date_column) if isinstance(d, str)]
    assert any(len(d) == 10 for d in dates), "a plain date"
    assert any(len(d) == 16 for d in dates), "a date with an offset"
    assert any(None in entry.values() for entry in entries), "an explicit null"
    columns = JOBS[path.stem].entry_model.model_fields
    assert any(set(columns) - set(e) for e in entries), "a missing column"


def test_fixtures_show_the_multi_value_boolean_and_group_quirks() -> None:
    deposits = list(iter_report_file(FIXTURES / "raas" / "clientDepositUpdate.json"))
    assert any("; " in str(e.get("Applied_Invoices")) for e in deposits)
    payments = list(iter_report_file(FIXTURES / "raas" / "lspBillUpdateStatus.json"))
    assert {"0", "1"} <= {e.get("On_Hold") for e in payments}
    groups = [e.get("Supplier_Invoices_group", ...) for e in payments]
    assert [] in groups and ... in groups  # an empty group and none at all
    assert any(isinstance(g, list) and len(g) > 1 for g in groups)
