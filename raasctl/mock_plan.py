"""What `enqueue-mock` is about to do, worked out before anything is sent: how many messages
(copies × the fixture's payloads) and what one of them looks like. A count that surprises
an operator (10 payloads × 100,000 copies is a million messages) must be seen first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raasctl.runner import default_mock_fixture, job_for, load_mock_seed, mock_messages

if TYPE_CHECKING:
    from raasctl.runtime import Runtime

# A sample message's run id: the real one is made when the run is created.
SAMPLE_RUN_ID = "<run_id>"


@dataclass(frozen=True)
class MockPlan:
    cron: str
    fixture: Path
    payloads: int  # payloads in the fixture
    copies: int
    sample_group_id: str | None
    sample_body: dict[str, Any]  # the first message's envelope, as a worker receives it

    @property
    def messages(self) -> int:
        return self.payloads * self.copies

    def describe(self) -> str:
        return f"{self.messages:,} messages ({self.copies:,} copies × {self.payloads} payloads)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "fixture": str(self.fixture),
            "payloads": self.payloads,
            "copies": self.copies,
            "messages": self.messages,
            "sample": {"group_id": self.sample_group_id, "body": self.sample_body},
        }


def plan_mock(runtime: Runtime, cron: str, fixture: Path | None, copies: int) -> MockPlan:
    """The plan, with the fixture validated (ConfigError FIXTURE_INVALID, exit 2)."""
    job, settings = job_for(runtime, cron)
    path = (fixture or default_mock_fixture(cron)).absolute()
    seed = load_mock_seed(job, path, settings.columns)
    first = next(mock_messages(cron, SAMPLE_RUN_ID, seed, 1)).message
    return MockPlan(
        cron=cron,
        fixture=path,
        payloads=len(seed),
        copies=copies,
        sample_group_id=first.group_id,
        sample_body=json.loads(first.body),
    )
