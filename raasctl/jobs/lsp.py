"""lspBillUpdateStatus: one payload per supplier invoice a payment settles.

A Supplier_Invoice_Payments entry is one payment with its invoices in
`Supplier_Invoices_group`; each invoice is its own message (its own record downstream).
A payment with no invoices yields nothing and is not an error.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import Field

from raasctl.jobs.base import Amount, Day, EntryModel, Flag, Job, Payload, RecordId, Text


class SupplierInvoiceRow(EntryModel):
    Supplier_Invoice_ID: RecordId
    Invoice_Number: Text = None
    Amount_Paid: Amount = None
    Invoice_Status: Text = None


class SupplierPaymentEntry(EntryModel):
    Payment_ID: RecordId
    Supplier: Text = None
    Supplier_ID: Text = None
    Currency: Text = None
    Payment_Date: Day = None
    Payment_Status: Text = None
    # Workday leaves a false boolean out of the entry, so a missing On_Hold means "0".
    On_Hold: Flag = False
    Supplier_Invoices_group: list[SupplierInvoiceRow] = Field(default_factory=list)


class SupplierInvoicePaymentPayload(Payload):
    payment_id: str
    supplier: str | None
    supplier_id: str | None
    currency: str | None
    payment_date: date | None
    payment_status: str | None
    on_hold: bool
    supplier_invoice_id: str
    invoice_number: str | None
    amount_paid: Decimal | None
    invoice_status: str | None


class LspBillUpdateStatus(Job):
    name = "lspBillUpdateStatus"
    report = "Supplier_Invoice_Payments"
    entry_model = SupplierPaymentEntry

    def payloads(self, entry: SupplierPaymentEntry) -> list[tuple[str, Payload]]:
        return [
            (
                row.Supplier_Invoice_ID,
                SupplierInvoicePaymentPayload(
                    payment_id=entry.Payment_ID,
                    supplier=entry.Supplier,
                    supplier_id=entry.Supplier_ID,
                    currency=entry.Currency,
                    payment_date=entry.Payment_Date,
                    payment_status=entry.Payment_Status,
                    on_hold=entry.On_Hold,
                    supplier_invoice_id=row.Supplier_Invoice_ID,
                    invoice_number=row.Invoice_Number,
                    amount_paid=row.Amount_Paid,
                    invoice_status=row.Invoice_Status,
                ),
            )
            for row in entry.Supplier_Invoices_group
        ]
