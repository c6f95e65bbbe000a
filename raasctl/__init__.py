"""raasctl: run Workday RaaS cron jobs on a queue."""

__version__ = "0.1.0"
