"""Benchmark: `raasctl access test` judging 3,000 policy cases in one process.

    .venv/bin/python benchmarks/access_suite.py [--cases 3000]

Writes a suite of generated cases — the example queue policy judged alone and with identity
policies, same- and cross-account principals of every kind, conditions, policy variables and
inline policies — as YAML and as JSON lines, then runs `raasctl access test FILE --format
json` as a subprocess on each and prints the wall clock of the whole process (start-up,
parsing, validation and judging) beside the target.

Target: 3,000 cases in under 10 s in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

TARGET_S = 10.0
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "access" / "work-uat-queue-policy.json"
QUEUE = "arn:aws:sqs:us-east-1:111122223333:raas-cron-jobs-work-uat.fifo"
PRINCIPALS = [
    "arn:aws:sts::111122223333:assumed-role/raas-worker/i-0abc123",
    "arn:aws:iam::111122223333:role/raas-worker",
    "arn:aws:iam::111122223333:role/raas-operator",
    "arn:aws:iam::111122223333:user/alice",
    "arn:aws:sts::111122223333:federated-user/alice",
    "arn:aws:sts::222233334444:assumed-role/raas-worker/ci-7",
    "111122223333",
    "sns.amazonaws.com",
]
ACTIONS = [
    "sqs:SendMessage",
    "sqs:SendMessageBatch",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:PurgeQueue",
    "sqs:GetQueueAttributes",
]
IDENTITY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "Own", "Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:*:raas-*"},
        {
            "Sid": "Tagged",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": "arn:aws:sqs:*:*:${aws:PrincipalTag/team}-*",
        },
        {
            "Sid": "NotAfter",
            "Effect": "Deny",
            "Action": "sqs:*",
            "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}},
        },
    ],
}


def case(rng: random.Random, number: int) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if rng.random() < 0.9:
        context["aws:SecureTransport"] = rng.choice([True, False])
    if rng.random() < 0.5:
        context["aws:CurrentTime"] = rng.choice(["2026-12-01T00:00:00Z", "2027-06-01T00:00:00Z"])
    if rng.random() < 0.3:
        context["aws:PrincipalTag/team"] = rng.choice(["raas", "billing"])
    out: dict[str, Any] = {
        "name": f"generated {number}",
        "principal": rng.choice(PRINCIPALS),
        "action": rng.choice(ACTIONS),
        "context": context,
        "expect": "allowed",  # many fail on purpose: failures are reported too
    }
    if rng.random() < 0.9:
        out["resource"] = QUEUE
    kind = rng.random()
    if kind < 0.4:
        out["policy"] = EXAMPLE.name
    elif kind < 0.8:
        out["identity_policy"] = "identity.json"
        out["resource_policy"] = EXAMPLE.name
    else:
        out["identity_policy"] = IDENTITY  # inline: parsed for every case
        out["resource_policy"] = EXAMPLE.name
    return out


def run(suite: Path) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "raasctl", "access", "test", str(suite), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"access test exited {done.returncode}: {done.stderr.strip()}")
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    args = parser.parse_args()
    rng = random.Random(13)
    cases = [case(rng, n) for n in range(1, args.cases + 1)]
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / EXAMPLE.name).write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
        (base / "identity.json").write_text(json.dumps(IDENTITY), encoding="utf-8")
        (base / "suite.jsonl").write_text("\n".join(json.dumps(c) for c in cases) + "\n")
        (base / "suite.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
        print(
            f"{args.cases} cases, one `raasctl access test` process each "
            f"(target < {TARGET_S:.0f} s)"
        )
        for name in ("suite.jsonl", "suite.yaml"):
            elapsed, result = run(base / name)
            verdict = "ok" if elapsed < TARGET_S else "OVER TARGET"
            print(
                f"  {name:12} {elapsed:6.2f} s wall clock, {result['cases'] / elapsed:7.0f} "
                f"cases/s ({result['passed']} expected allowed, {len(result['failed'])} not) "
                f"[{verdict}]"
            )


if __name__ == "__main__":
    main()
