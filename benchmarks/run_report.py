"""Benchmark: `raasctl run` streaming a large Workday report into the embedded queue.

    .venv/bin/python benchmarks/run_report.py [--sizes 20000 200000]

For each size, a fake Workday (tests/workday_server.py, on 127.0.0.1, in this process)
streams a generated clientDepositUpdate report of that many entries, and `raasctl run` runs
as a subprocess into a fresh SQLite queue. Prints entries/s (wall clock of the whole
subprocess, interpreter start included) and the subprocess's peak RSS, sampled with psutil.
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
        command = [sys.executable, "-m", "raasctl", "-q", "run", "clientDepositUpdate"]
        elapsed, peak, stdout, stderr = measure([*command, "--format", "json"], env, folder)
        if stderr.strip() or not stdout.strip():
            raise SystemExit(f"raasctl run failed:\n{stderr}")
        summary = json.loads(stdout)
        if summary["enqueued"] != size:
            raise SystemExit(f"expected {size} messages, got {summary}")
    return {
        "entries": size,
        "seconds": elapsed,
        "per_second": size / elapsed,
        "peak_mb": peak / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    print(f"{'entries':>9} {'seconds':>8} {'entries/s':>10} {'peak RSS':>10}")
    ok = True
    for size in args.sizes:
        result = bench(size)
        print(
            f"{size:>9,} {result['seconds']:>8.2f} {result['per_second']:>10,.0f} "
            f"{result['peak_mb']:>7.1f} MB"
        )
        ok &= result["per_second"] >= TARGET_PER_SECOND and result["peak_mb"] < TARGET_PEAK_MB
    print(
        f"targets: >= {TARGET_PER_SECOND:,} entries/s, peak < {TARGET_PEAK_MB} MB: "
        + ("met" if ok else "MISSED")
    )


if __name__ == "__main__":
    main()
