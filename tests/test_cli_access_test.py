"""`raasctl access test FILE`: policy suites end to end through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from raasctl.cli import main

ACCOUNT = "111122223333"
PARTNER = "444455556666"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCOUNT}:jobs.fifo"
WORKER = f"arn:aws:sts::{ACCOUNT}:assumed-role/raas-worker/i-1"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SUITE = ROOT / "examples" / "access" / "queue-policy-suite.yaml"

QUEUE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Owner",
            "Effect": "Allow",
            "Principal": {"AWS": ACCOUNT},
            "Action": "sqs:*",
            "Resource": QUEUE,
        },
        {
            "Sid": "Worker",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/raas-worker"},
            "Action": "sqs:SendMessage",
            "Resource": QUEUE,
        },
        {
            "Sid": "Tls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": QUEUE,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    ],
}
IDENTITY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "Inspect", "Effect": "Allow", "Action": "sqs:Get*", "Resource": "*"}],
}


def base_case(**extra: Any) -> dict[str, Any]:
    return {
        "principal": WORKER,
        "action": "sqs:SendMessage",
        "resource": QUEUE,
        "context": {"aws:SecureTransport": True},
        **extra,
    }


CASES: list[dict[str, Any]] = [
    base_case(name="worker sends", policy="policies/queue.json", expect="allowed"),
    base_case(
        name="plain http",
        policy="policies/queue.json",
        context={"aws:SecureTransport": "false"},
        expect="explicit_deny",
    ),
    base_case(
        name="transport unknown", policy="policies/queue.json", context={}, expect="indeterminate"
    ),
    base_case(
        name="owner statement delegates",
        principal=f"arn:aws:iam::{ACCOUNT}:role/ops",
        action="sqs:GetQueueAttributes",
        resource_policy="policies/queue.json",
        expect="implicit_deny",
    ),
    base_case(
        name="identity grants inspection",
        principal=f"arn:aws:iam::{ACCOUNT}:role/ops",
        action="sqs:GetQueueAttributes",
        identity_policy="policies/identity.json",
        resource_policy="policies/queue.json",
        expect="allowed",
    ),
    base_case(
        name="inline identity, another account",
        principal=f"arn:aws:sts::{PARTNER}:assumed-role/raas-worker/x",
        identity_policy=IDENTITY,
        resource_policy=QUEUE_POLICY,
        action="sqs:GetQueueAttributes",
        expect="implicit_deny",
    ),
    base_case(
        name="multi-valued and absent keys",
        policy={
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "sqs:TagQueue",
                    "Resource": QUEUE,
                    "Condition": {
                        "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]},
                        "Null": {"aws:SourceVpce": "true"},
                    },
                }
            ],
        },
        action="sqs:TagQueue",
        context={"aws:TagKeys": ["team"]},
        absent=["aws:SourceVpce"],
        expect="allowed",
    ),
]


def write_suite(cases: list[dict[str, Any]], name: str = "suite.yaml") -> Path:
    folder = Path("suites")
    (folder / "policies").mkdir(parents=True, exist_ok=True)
    (folder / "policies" / "queue.json").write_text(json.dumps(QUEUE_POLICY), encoding="utf-8")
    (folder / "policies" / "identity.json").write_text(json.dumps(IDENTITY), encoding="utf-8")
    path = folder / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(case) + "\n" for case in cases), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(cases, sort_keys=False), encoding="utf-8")
    return path


def run(runner: CliRunner, path: Path, *args: str) -> Result:
    return runner.invoke(main, ["access", "test", str(path), *args])


@pytest.mark.parametrize("name", ["suite.yaml", "suite.jsonl"])
def test_every_case_passes(runner: CliRunner, name: str) -> None:
    result = run(runner, write_suite(CASES, name), "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"cases": len(CASES), "passed": len(CASES), "failed": []}


def test_failures_are_listed_and_exit_3(runner: CliRunner) -> None:
    wrong = [
        *CASES,
        base_case(
            name="expects too much",
            resource_policy="policies/queue.json",
            action="sqs:PurgeQueue",
            expect="allowed",
        ),
        base_case(
            policy="policies/queue.json", context={"aws:SecureTransport": False}, expect="allowed"
        ),
    ]
    path = write_suite(wrong)

    result = run(runner, path, "--format", "json")
    table = run(runner, path)

    assert result.exit_code == 3
    assert json.loads(result.stdout) == {
        "cases": len(wrong),
        "passed": len(CASES),
        "failed": [
            {
                "name": "expects too much",
                "expect": "allowed",
                "decision": "implicit_deny",
                "statements": [],
            },
            {
                "name": f"case {len(wrong)} (line {_line_of(path, len(wrong))})",
                "expect": "allowed",
                "decision": "explicit_deny",
                "statements": ["Tls"],
            },
        ],
    }
    assert table.exit_code == 3
    assert f"{len(CASES)} of {len(wrong)} cases pass" in table.stdout
    assert "expects too much" in table.stdout and "implicit_deny" in table.stdout


def _line_of(path: Path, number: int) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if line.startswith("- ")]
    return starts[number - 1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (base_case(policy="policies/queue.json", expect="maybe"), "expect"),
        (base_case(policy="policies/queue.json"), "expect: Field required"),
        (base_case(policy="policies/queue.json", expect="allowed", colour="red"), "colour"),
        (base_case(expect="allowed"), "give policy, or identity_policy and/or resource_policy"),
        (
            base_case(policy="p.json", resource_policy="q.json", expect="allowed"),
            "give policy, or identity_policy and/or resource_policy",
        ),
        (base_case(policy="policies/none.json", expect="allowed"), "cannot read policy file"),
        (
            base_case(policy="policies/queue.json", action="sqs:SendMesage", expect="allowed"),
            "did you mean sqs:SendMessage?",
        ),
        (
            base_case(policy="policies/queue.json", principal="bob", expect="allowed"),
            "'bob' is not a principal",
        ),
        (
            base_case(identity_policy="policies/queue.json", expect="allowed"),
            "an identity policy has no Principal elements",
        ),
        (
            base_case(policy={"Statement": [{"Effect": "Maybe"}]}, expect="allowed"),
            "Effect must be Allow or Deny",
        ),
    ],
    ids=[
        "bad-expect",
        "no-expect",
        "unknown-field",
        "no-policy",
        "both-kinds",
        "missing-file",
        "unknown-action",
        "bad-principal",
        "identity-with-principals",
        "bad-inline-policy",
    ],
)
def test_an_invalid_case_is_exit_2_naming_its_line(
    runner: CliRunner, case: dict[str, Any], message: str
) -> None:
    path = write_suite([CASES[0], case])

    result = run(runner, path)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "RAAS_POLICY_INVALID" in result.stderr
    assert f"case 2 (line {_line_of(path, 2)})" in result.stderr
    assert str(path) in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- [unclosed\n", "not valid YAML"),
        ("name: not a list\n", "a suite is a list of cases"),
        ("- 42\n", "case 1 (line 1) is not a mapping"),
    ],
)
def test_an_invalid_yaml_file_is_exit_2(runner: CliRunner, text: str, message: str) -> None:
    path = Path("bad.yaml")
    path.write_text(text, encoding="utf-8")

    result = run(runner, path)

    assert (result.exit_code, result.stdout) == (2, "")
    assert message in result.stderr


def test_an_invalid_json_line_names_the_line(runner: CliRunner) -> None:
    path = write_suite(CASES[:2], "suite.jsonl")
    path.write_text(path.read_text(encoding="utf-8") + '{"principal": \n', encoding="utf-8")

    result = run(runner, path)

    assert result.exit_code == 2
    assert "line 3 is not valid JSON" in result.stderr


def test_a_missing_suite_is_exit_2(runner: CliRunner) -> None:
    result = run(runner, Path("nowhere.yaml"))

    assert result.exit_code == 2
    assert "nowhere.yaml" in result.stderr and "cannot be read" in result.stderr


def test_the_example_suite_passes_as_a_subprocess() -> None:
    # The suite shipped for the example config's queue policy, run as CI would run it.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "raasctl", "access", "test", str(EXAMPLE_SUITE), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["failed"] == [] and result["cases"] == result["passed"] >= 10
