"""The four cron jobs. A plain dict is the registry: name -> Job."""

from raasctl.jobs.base import EntryInvalid, Job, MappedPayload, map_report
from raasctl.jobs.bills import ClientBillPaidStatus, ClientBillUnpaidStatus
from raasctl.jobs.deposits import ClientDepositUpdate
from raasctl.jobs.lsp import LspBillUpdateStatus

JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        ClientDepositUpdate(),
        ClientBillPaidStatus(),
        ClientBillUnpaidStatus(),
        LspBillUpdateStatus(),
    )
}

__all__ = ["JOBS", "EntryInvalid", "Job", "MappedPayload", "map_report"]
