"""clientBillPaidStatus and clientBillUnpaidStatus: one payload per client invoice.

Both read the same columns; they differ in the report (paid, or unpaid and partially paid)
and in their schedule, 30 minutes apart.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from raasctl.jobs.base import Amount, Day, EntryModel, Job, Payload, RecordId, Text


class InvoiceEntry(EntryModel):
    Invoice_ID: RecordId
    Invoice_Number: Text = None
    Customer_ID: Text = None
    Currency: Text = None
    Total_Amount: Amount = None
    Amount_Due: Amount = None
    Payment_Status: Text = None
    Payment_Date: Day = None


class InvoiceStatusPayload(Payload):
    invoice_id: str
    invoice_number: str | None
    customer_id: str | None
    currency: str | None
    total_amount: Decimal | None
    amount_due: Decimal | None
    payment_status: str | None
    payment_date: date | None


class _BillStatusJob(Job):
    entry_model = InvoiceEntry

    def payloads(self, entry: InvoiceEntry) -> list[tuple[str, Payload]]:
        payload = InvoiceStatusPayload(
            invoice_id=entry.Invoice_ID,
            invoice_number=entry.Invoice_Number,
            customer_id=entry.Customer_ID,
            currency=entry.Currency,
            total_amount=entry.Total_Amount,
            amount_due=entry.Amount_Due,
            payment_status=entry.Payment_Status,
            payment_date=entry.Payment_Date,
        )
        return [(entry.Invoice_ID, payload)]


class ClientBillPaidStatus(_BillStatusJob):
    name = "clientBillPaidStatus"
    report = "Client_Invoices_Paid"


class ClientBillUnpaidStatus(_BillStatusJob):
    name = "clientBillUnpaidStatus"
    report = "Client_Invoices_Unpaid"
