"""clientDepositUpdate: one payload per client deposit in the Client_Deposits report."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import Field

from raasctl.jobs.base import (
    Amount,
    Day,
    EntryModel,
    Job,
    MultiValue,
    Payload,
    RecordId,
    Text,
)


class DepositEntry(EntryModel):
    Deposit_ID: RecordId
    Deposit_Reference: Text = None
    Customer: Text = None
    Customer_ID: Text = None
    Company: Text = None
    Currency: Text = None
    Deposit_Amount: Amount = None
    Deposit_Date: Day = None
    Deposit_Status: Text = None
    Applied_Invoices: MultiValue = Field(default_factory=list)


class DepositPayload(Payload):
    deposit_id: str
    deposit_reference: str | None
    customer: str | None
    customer_id: str | None
    company: str | None
    currency: str | None
    amount: Decimal | None
    deposit_date: date | None
    status: str | None
    applied_invoices: list[str]


class ClientDepositUpdate(Job):
    name = "clientDepositUpdate"
    report = "Client_Deposits"
    entry_model = DepositEntry

    def payloads(self, entry: DepositEntry) -> list[tuple[str, Payload]]:
        payload = DepositPayload(
            deposit_id=entry.Deposit_ID,
            deposit_reference=entry.Deposit_Reference,
            customer=entry.Customer,
            customer_id=entry.Customer_ID,
            company=entry.Company,
            currency=entry.Currency,
            amount=entry.Deposit_Amount,
            deposit_date=entry.Deposit_Date,
            status=entry.Deposit_Status,
            applied_invoices=entry.Applied_Invoices,
        )
        return [(entry.Deposit_ID, payload)]
