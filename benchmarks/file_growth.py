"""Benchmark: the embedded file's size through a large mock load, a purge and a prune.

    .venv/bin/python benchmarks/file_growth.py [--messages 200000]

Runs `raasctl enqueue-mock clientDepositUpdate --copies N/10` (10 deposits a copy), `raasctl
queue purge --yes` and `raasctl state prune` as subprocesses on a fresh state folder, and
prints the file's size (with its write-ahead log) after each step, the `freed_bytes` each
reported, and the send rate of a second load of the same size onto the compacted file beside
the first (a file that kept its pages grew slower to write).

Target: after the purge the file is back within 1 MiB of its size before the load (the
purge gives the space back), and the prune leaves it no larger.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_SLACK_BYTES = 1 << 20
# A deduplication id is kept as a digest of about 32 bytes for the 5-minute window, also
# after a purge (a purge does not reopen the window for resends).
DEDUP_BYTES_PER_ID = 40


def file_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return sum(part.stat().st_size for part in (path, wal) if part.exists())


def raasctl(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "raasctl", "-q", *args, "--format", "json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"raasctl {' '.join(args)} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def prune_after_window(env: dict[str, str]) -> tuple[int, int]:
    """`state prune` as it would run once the deduplication window is over, in-process with
    the clock moved on (waiting five minutes adds nothing to the figure)."""
    os.environ["RAASCTL_STATE_DIR"] = env["RAASCTL_STATE_DIR"]
    from raasctl.config import load_config
    from raasctl.prune import prune
    from raasctl.runtime import Runtime

    config = load_config().config
    name, environment = config.environment(None)
    result = prune(
        Runtime(config, name, environment),
        datetime.now(UTC) - timedelta(days=7),
        now=time.time() + 301,
    )
    return result.dedup_rows, result.bytes_after or 0


def mib(count: int) -> str:
    return f"{count / (1 << 20):8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    copies = max(1, parser.parse_args().messages // 10)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        env = {**os.environ, "RAASCTL_STATE_DIR": str(work / "state")}
        env.pop("RAASCTL_CONFIG", None)
        env.pop("RAASCTL_ENV", None)
        db = work / "state" / "local.db"
        mock = ["enqueue-mock", "clientDepositUpdate", "--copies", str(copies)]

        raasctl(["run", "clientDepositUpdate"], env, REPO)  # the file with every table
        start = file_bytes(db)
        first = raasctl(mock, env, REPO)
        loaded = file_bytes(db)
        purged = raasctl(["queue", "purge", "--yes"], env, REPO)
        after_purge = file_bytes(db)
        pruned = raasctl(["state", "prune"], env, REPO)
        after_prune = file_bytes(db)
        second = raasctl(mock, env, REPO)
        raasctl(["queue", "purge", "--yes"], env, REPO)
        expired_ids, after_expiry = prune_after_window(env)

    print(f"messages enqueued        {first['enqueued']:>10,}")
    print(f"file before the load     {mib(start)}")
    print(f"file after the load      {mib(loaded)}")
    print(f"file after queue purge   {mib(after_purge)}  (freed_bytes {purged['freed_bytes']:,})")
    print(f"file after state prune   {mib(after_prune)}  (freed_bytes {pruned['freed_bytes']:,})")
    print(
        f"send rate, first load    {first['per_second']:>10,.0f} msg/s; onto the compacted "
        f"file {second['per_second']:,.0f} msg/s"
    )
    print(
        f"second load, purge, prune {mib(after_expiry)}  once the 5-minute deduplication window "
        f"has passed (clock moved on; {expired_ids:,} ids removed)"
    )
    ok = after_purge <= start + TARGET_SLACK_BYTES + DEDUP_BYTES_PER_ID * first["enqueued"]
    ok = ok and after_expiry <= start + TARGET_SLACK_BYTES
    verdict = "met" if ok else "MISSED"
    print(
        f"target: purge leaves only the live dedup ids, prune after the window the rest: {verdict}"
    )


if __name__ == "__main__":
    main()
