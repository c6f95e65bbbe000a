"""The embedded source: reports as JSON files in a folder, one per cron (`<path>/<cron>.json`).

Files are read through the same streaming parser as Workday's responses, so a fixture is
exactly what a RaaS call would return. Prompts are ignored: a fixture is the report as it
came back, already filtered to its window.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from raasctl.sources.base import Prompts, ReportEntry, Source
from raasctl.sources.stream import iter_report_file


class FixtureSource(Source):
    def __init__(self, path: Path) -> None:
        # Read when first needed, not now. A config file anchors its relative paths to its own
        # folder; a relative path given here resolves against the working directory.
        self.path = Path(path)

    def file_for(self, cron: str) -> Path:
        return self.path / f"{cron}.json"

    def entries(self, cron: str, report: str, prompts: Prompts) -> Iterator[ReportEntry]:
        return iter_report_file(self.file_for(cron))
