"""Benchmark: `raasctl run` streaming a large Workday report into the embedded queue.

    .venv/bin/python benchmarks/run_report.py [--sizes 20000 200000]

For each size, a fake Workday (tests/workday_server.py, on 127.0.0.1, in this process)
streams a generated clientDepositUpdate report of that many entries, and `raasctl run` runs
as a subprocess into a fresh SQLite queue. Prints entries/s by the wall clock of the whole
subprocess (interpreter start included) and by the run's own logs (RAAS_RUN_STARTED to
RAAS_ENQUEUE_COMPLETE), and the subprocess's peak RSS, sampled with psutil.
Targets: at least 5,000 entries/s and a peak under 150 MB, the same for both sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from workday_server import FakeWorkday  # noqa: E402

TARGET_PER_SECOND = 5_000
TARGET_PEAK_MB = 150


def write_config(folder: Path, workday: FakeWorkday) -> Path:
    path = folder / "raasctl.yaml"
    path.write_text(
        "default_env: bench\n"
        "environments:\n"
        "  bench:\n"
        "    source:\n"
        "      kind: workday\n"
        f"      base_url: {workday.base_url}\n"
        f"      tenant: {workday.tenant}\n"
        f"      owner: {workday.owner}\n"
        "      auth: {kind: basic, username: env:WORKDAY_USER, password: env:WORKDAY_PASSWORD}\n",
        encoding="utf-8",
    )
    return path


def measure(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str, str]:
    """Run `command`; return (seconds, peak RSS in bytes, stdout, stderr)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        watched = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return elapsed, peak, out.read().decode(), err.read().decode()


def log_times(stderr: str) -> dict[str, datetime]:
    """When each logged event happened (stderr is not a terminal, so logs are JSON lines)."""
    times = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            times[document["code"]] = datetime.fromisoformat(document["ts"])
    return times


def bench(size: int) -> dict[str, float]:
    with FakeWorkday() as workday, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        workday.add_generated_report("Client_Deposits", size)
        config = write_config(folder, workday)
        env = {
            **os.environ,
            **workday.env(),
            "RAASCTL_CONFIG": str(config),
            "RAASCTL_STATE_DIR": str(folder / "state"),
        }
        command = [sys.executable, "-m", "raasctl", "run", "clientDepositUpdate"]
        elapsed, peak, stdout, stderr = measure([*command, "--format", "json"], env, folder)
        times = log_times(stderr)
        if "RAAS_ENQUEUE_COMPLETE" not in times or not stdout.strip():
            raise SystemExit(f"raasctl run failed:\n{stderr}")
        summary = json.loads(stdout)
        if summary["enqueued"] != size:
            raise SystemExit(f"expected {size} messages, got {summary}")
    # The run itself: from RAAS_RUN_STARTED (lock taken, run recorded, report about to be
    # requested) to RAAS_ENQUEUE_COMPLETE; the wall clock adds interpreter start and imports.
    run_s = (times["RAAS_ENQUEUE_COMPLETE"] - times["RAAS_RUN_STARTED"]).total_seconds()
    return {
        "entries": size,
        "seconds": elapsed,
        "per_second": size / elapsed,
        "run_per_second": size / run_s,
        "peak_mb": peak / 1e6,
    }


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages: figures from a busy machine are low."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    print(f"load average at the start: {load_average()} ({os.cpu_count()} CPUs)")
    header = ("entries", "wall s", "entries/s wall", "entries/s run", "peak RSS")
    print("{:>9} {:>8} {:>15} {:>14} {:>10}".format(*header))
    ok = True
    for size in args.sizes:
        r = bench(size)
        print(
            f"{size:>9,} {r['seconds']:>8.2f} {r['per_second']:>15,.0f} "
            f"{r['run_per_second']:>14,.0f} {r['peak_mb']:>7.1f} MB"
        )
        ok &= r["per_second"] >= TARGET_PER_SECOND and r["peak_mb"] < TARGET_PEAK_MB
    print(
        f"targets: >= {TARGET_PER_SECOND:,} entries/s (wall clock), peak < {TARGET_PEAK_MB} MB: "
        + ("met" if ok else "MISSED")
    )
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
