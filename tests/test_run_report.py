"""Run statistics and `raasctl runs report`: a mock run drained against a callback with a
known latency distribution, its report checked against that distribution and the run's
counters, the HTML page standing alone, the worker's Prometheus metrics."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from callback_server import CallbackServer
from click.testing import CliRunner
from support import wait_until

from raasctl.cli import main
from raasctl.runstats import BUCKET_RATIO, StatsRow, build_report, percentile
from raasctl.state.base import RunRecord

DEPOSITS = "clientDepositUpdate"
ROOT = Path(__file__).resolve().parent.parent
# Time a sink call may take beyond the server's own delay (HTTP, threads): a few ms alone,
# tens of ms on a shared machine running other suites. Below the known values nothing can
# push a measurement, so the lower bound is the histogram's bucket error alone.
OVERHEAD_MS = 40.0


def latency_s(key: str) -> float:
    """Each key's known latency: spread evenly over 5-100 ms by a hash of the key."""
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return 0.005 + 0.095 * draw


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q / 100 * len(ordered) + 0.5) - 1))]


def cli(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(main, list(args), catch_exceptions=False)


def scrape(port: int) -> dict[str, float]:
    """The metrics page as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_percentiles_from_the_histogram_are_within_one_bucket_of_the_exact_ones() -> None:
    randomly = random.Random(3)
    values = [randomly.lognormvariate(3, 1) for _ in range(5000)]  # ms, a long tail
    row = StatsRow("run", 0, "w")
    for value in values:
        row.add_latency(value)
    for q in (50, 90, 95, 99):
        estimate = percentile(row.latency, q)
        exact = exact_percentile(values, q)
        assert estimate is not None
        assert exact / BUCKET_RATIO <= estimate <= exact * BUCKET_RATIO, q
    assert percentile({}, 50) is None


def test_no_percentile_is_reported_above_the_largest_latency_seen() -> None:
    run = RunRecord(
        "r1",
        DEPOSITS,
        "local",
        True,
        datetime(2026, 1, 1, tzinfo=UTC),
        total=5,
        succeeded=5,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    row = StatsRow("r1", 100, "a", DEPOSITS, succeeded=5, concurrency=1)
    for _ in range(5):
        row.add_latency(11.0)  # one value: a bucket's upper edge lies above it

    latency = build_report(run, [row], datetime.now(UTC)).latency_ms

    assert latency["max"] == 11.0
    assert all(value is not None and 10.0 <= value <= 11.0 for value in latency.values())


def test_rows_of_several_workers_merge_into_one_timeline_and_bound() -> None:
    run = RunRecord(
        "r1",
        DEPOSITS,
        "local",
        True,
        datetime(2026, 1, 1, tzinfo=UTC),
        total=9,
        succeeded=7,
        failed=1,
        dead_lettered=1,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC),
    )
    rows = [
        StatsRow("r1", 100, "a", DEPOSITS, succeeded=3, concurrency=4, rate_per_s=5),
        StatsRow("r1", 100, "b", DEPOSITS, succeeded=2, retries=1, concurrency=4, rate_per_s=5),
        StatsRow("r1", 102, "a", DEPOSITS, succeeded=2, failed=1, dead_lettered=1, concurrency=4),
    ]
    for row in rows:
        for _ in range(10):
            row.add_latency(200.0)  # 200 ms: concurrency 8 / 0.2 s = 40/s, over the rate
    report = build_report(run, rows, datetime.now(UTC))
    timeline = report.as_json()["timeline"]
    assert [second["t"] for second in timeline] == [0, 1, 2]  # the gap is a zero second
    assert [second["workers"] for second in timeline] == [2, 0, 1]
    assert [second["succeeded"] for second in timeline] == [5, 0, 2]
    # The busiest second had two workers of 4 slots and 5/s each; the later one unlimited
    # only in a second with less capacity: the bound is min(10/s, 8 / 0.2 s).
    assert report.concurrency == 8
    assert report.as_json()["per_second"] == 3.0  # 9 messages in 3 s
    assert report.bound_per_second is not None
    assert report.rate_limit is None  # one worker ran unlimited
    assert report.bound_per_second == pytest.approx(8 / (report.latency_ms["p50"] / 1000))  # type: ignore[operator]


@pytest.fixture
def callback() -> Any:
    with CallbackServer(fail_rate=0.1, seed=11, timeout_delay_s=0.0, latency_for=latency_s) as s:
        yield s


def configure(server: CallbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_TOKEN", server.token)
    env = {
        "source": {"kind": "fixtures"},
        "queue": {"kind": "sqlite", "max_receive_count": 5},
        "state": {"kind": "sqlite"},
        "sink": {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"},
        "concurrency": 8,
        "rate_limit": 100,
    }
    config = {"default_env": "local", "environments": {"local": env}}
    Path("raasctl.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def test_a_drained_run_reports_the_known_latencies_and_its_timeline_adds_up_to_its_counters(
    runner: CliRunner, callback: CallbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raasctl.config import load_config
    from raasctl.runtime import Runtime
    from raasctl.worker import open_worker, worker_options

    configure(callback, monkeypatch)
    mock = cli(runner, "--format", "json", "enqueue-mock", DEPOSITS, "--copies", "20")
    assert mock.exit_code == 0, mock.stderr
    run_id = json.loads(mock.stdout)["run_id"]

    config = load_config().config
    name, env = config.environment(None)
    options = worker_options(
        env, until_empty=True, metrics_port=0, stats_interval_s=None, backoff_cap_s=1
    )
    with open_worker(Runtime(config, name, env), options) as worker:
        metrics = worker.recorder.metrics
        assert metrics is not None and metrics.port is not None
        drain = threading.Thread(target=worker.run)
        drain.start()
        during = wait_until(
            lambda: (
                (m := scrape(metrics.port))  # type: ignore[arg-type]
                and m.get(f'raasctl_messages_total{{cron="{DEPOSITS}",outcome="succeeded"}}', 0) > 0
                and m
            )
        )
        drain.join(timeout=60)
        assert not drain.is_alive()
        after = scrape(metrics.port)

    view = json.loads(cli(runner, "--format", "json", "runs", "show", run_id).stdout)
    assert view["status"] == "complete" and view["succeeded"] == 200
    assert view["retries"] > 0  # the callback's 500s came back as retries
    result = cli(runner, "--format", "json", "runs", "report", "latest", "--html", "r.html")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "run_id",
        "cron",
        "status",
        "elapsed_s",
        "per_second",
        "per_hour",
        "bound_per_second",
        "latency_ms",
        "timeline",
    }
    assert report["run_id"] == run_id and report["status"] == "complete"
    assert set(report["latency_ms"]) == {"p50", "p90", "p95", "p99", "max"}

    # Percentiles: the known latencies of every call the callback served, within a bucket
    # (plus the HTTP round trip above them).
    known = [latency_s(served.key) * 1000 for served in callback.served]
    for q in (50, 90, 95, 99):
        exact = exact_percentile(known, q)
        measured = report["latency_ms"][f"p{q}"]
        # A stall of a loaded machine delays every call in flight at once, a few percent of
        # them (p99 of 200 calls is two of them; half a second in a suite running two
        # processes): the top percentiles get a wider margin above, never below.
        slack = OVERHEAD_MS if q < 95 else 25 * OVERHEAD_MS
        assert exact / BUCKET_RATIO <= measured <= exact * BUCKET_RATIO + slack, q
    # The maximum is one call: a connection's first request or a thread scheduled late may
    # add more than the usual overhead to it.
    assert max(known) <= report["latency_ms"]["max"] <= max(known) + 25 * OVERHEAD_MS

    # The timeline's sums are the run's counters.
    timeline = report["timeline"]
    for counter in ("succeeded", "failed", "retries", "dead_lettered"):
        assert sum(second[counter] for second in timeline) == view[counter], counter
    assert all(second["workers"] in (0, 1) for second in timeline)
    assert [second["t"] for second in timeline] == list(range(len(timeline)))
    # The bound: min(100/s, 8 / p50).
    p50_s = report["latency_ms"]["p50"] / 1000
    assert report["bound_per_second"] == pytest.approx(min(100, 8 / p50_s), rel=0.01)
    assert 0 < report["per_second"] <= report["bound_per_second"] * 1.1

    # Metrics: the same counts, and one latency observation per request served.
    label = f'cron="{DEPOSITS}"'
    assert after[f'raasctl_messages_total{{{label},outcome="succeeded"}}'] == 200
    assert after[f'raasctl_messages_total{{{label},outcome="retries"}}'] == view["retries"]
    assert after[f"raasctl_sink_latency_seconds_count{{{label}}}"] == len(callback.served)
    assert after["raasctl_rate_limiter_waits_total"] > 0  # 100/s is below 8 / ~50 ms
    assert 0 <= during["raasctl_in_flight"] <= 8
    assert after["raasctl_in_flight"] == 0

    # The terminal view: the summary, the latency percentiles and a sparkline.
    table = cli(runner, "runs", "report", run_id)
    assert table.exit_code == 0, table.stderr
    assert "bound per second" in table.stdout and "p99" in table.stdout
    assert re.search("throughput  [▁▂▃▄▅▆▇█]+", table.stdout)
    page = Path("r.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert run_id in page and "<svg" in page


class _References(HTMLParser):
    """Every attribute that can make a browser fetch something, and every style text."""

    FETCHING = frozenset(
        {"src", "href", "srcset", "xlink:href", "action", "poster", "data", "background"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.references: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in self.FETCHING:
                self.references.append(value or "")
            if name == "style":
                self.styles.append(value or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def assert_self_contained(page: str) -> None:
    parsed = _References()
    parsed.feed(page)
    assert not parsed.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert all(ref.startswith(("#", "data:")) for ref in parsed.references), parsed.references
    styles = "\n".join(parsed.styles)
    assert "<style" in page and styles.strip()
    assert "@import" not in styles
    assert all(url.startswith("data:") for url in re.findall(r"url\(\s*['\"]?([^)'\"]*)", styles))


def test_the_self_contained_check_catches_what_a_page_could_fetch() -> None:
    for leak in (
        '<img src="https://example.com/x.png">',
        '<link rel="stylesheet" href="style.css">',
        "<style>@import 'other.css';</style>",
        "<style>body { background: url(https://example.com/bg.png) }</style>",
    ):
        with pytest.raises(AssertionError):
            assert_self_contained(f"<html><head><style>b{{}}</style></head>{leak}</html>")


def test_a_report_of_an_unknown_run_or_before_any_run_exits_1(runner: CliRunner) -> None:
    none_yet = runner.invoke(main, ["runs", "report", "latest"])
    assert none_yet.exit_code == 1 and "RAAS_RUN_NOT_FOUND" in none_yet.stderr
    assert cli(runner, "enqueue-mock", DEPOSITS, "--copies", "1").exit_code == 0
    unknown = runner.invoke(main, ["runs", "report", "nope-1"])
    assert unknown.exit_code == 1 and "run nope-1 not found" in unknown.stderr
    # A run no worker has drained yet: a report with nothing measured, not an error.
    empty = runner.invoke(main, ["--format", "json", "runs", "report", "latest"])
    assert empty.exit_code == 0, empty.stderr
    assert json.loads(empty.stdout)["timeline"] == []
    bad_path = runner.invoke(main, ["runs", "report", "latest", "--html", "no/such/dir/r.html"])
    assert (
        bad_path.exit_code == 2
        and "--html" in bad_path.stderr
        and "Traceback" not in (bad_path.stderr)
    )


def test_a_metrics_port_in_use_is_refused_with_exit_2(runner: CliRunner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["worker", "--until-empty", "--metrics-port", str(port)])
    assert result.exit_code == 2, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_run_statistics_round_trip_on_dynamodb() -> None:
    from moto import mock_aws

    from raasctl.state.dynamodb import DynamoState
    from raasctl.state.dynamodb_table import create_table

    with mock_aws():
        import boto3

        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        store = DynamoState(client, "t").stats()
        rows = [
            StatsRow("r", 1_700_000_001, "h:1:ab", DEPOSITS, succeeded=4, concurrency=8),
            StatsRow("r", 1_700_000_000, "h:2:cd", DEPOSITS, retries=2, rate_per_s=2.5),
        ]
        rows[0].add_latency(12.5)
        store.write(rows)
        store.write([StatsRow("other", 1, "w", DEPOSITS, failed=1)])
        assert store.rows("r") == sorted(rows, key=lambda row: row.second)
        assert store.rows("missing") == []


@pytest.mark.skipif(
    not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium on this machine (the chromium package)",
)
def test_the_report_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    run = RunRecord("r-1", DEPOSITS, "local", True, datetime.now(UTC), total=3, succeeded=3)
    rows = [StatsRow("r-1", 10 + i, "w", DEPOSITS, succeeded=1, concurrency=2) for i in range(3)]
    for row in rows:
        row.add_latency(40.0)
    from raasctl.report_html import render_html

    page = tmp_path / "r.html"
    page.write_text(render_html(build_report(run, rows, datetime.now(UTC))), encoding="utf-8")
    png = tmp_path / "r.png"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "report_screenshot.py"),
            "--html",
            str(page),
            "--png",
            str(png),
            "--width",
            "420",
            "--height",
            "900",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (420, 900)
    assert len(data) > 10_000  # text and charts, not a blank page
