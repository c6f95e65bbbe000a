"""`raasctl access check` and `raasctl access explain` through the command line.

`access check` runs against moto in-process (mock_aws) and over ThreadedMotoServer, whose
SimulatePrincipalPolicy fails differently (NotImplementedError vs ResponseParserError); on
both the identity side must come out `unknown`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws

from raasctl.cli import main

ACCOUNT = "123456789012"
PARTNER = "999988887777"


def statement(sid: str, principal: Any, effect: str = "Allow", **extra: Any) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": effect,
        "Principal": principal,
        "Action": "sqs:*",
        "Resource": "*",
        **extra,
    }


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


GRANTED = policy(statement("WorkersAccount", {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
# For `access check`: within the account an account principal leaves it to the identity side
# (unknown under moto), so a queue that grants on its own names moto's caller itself.
GRANTED_TO_CALLER = policy(
    statement("WorkersAccount", {"AWS": f"arn:aws:sts::{ACCOUNT}:user/moto"})
)
PARTNER_ONLY = policy(statement("PartnerOnly", {"AWS": PARTNER}))
FENCED = policy(
    statement("PartnerOnly", {"AWS": PARTNER}),
    statement(
        "DenyOutsidePartner",
        "*",
        "Deny",
        Condition={"StringNotEquals": {"aws:PrincipalAccount": PARTNER}},
    ),
)
VPCE = policy(
    statement(
        "ViaEndpoint", {"AWS": ACCOUNT}, Condition={"StringEquals": {"aws:SourceVpce": "vpce-0abc"}}
    )
)
VPCE_FOR_CALLER = policy(
    statement(
        "ViaEndpoint",
        {"AWS": f"arn:aws:sts::{ACCOUNT}:user/moto"},
        Condition={"StringEquals": {"aws:SourceVpce": "vpce-0abc"}},
    )
)
TLS_ONLY = policy(
    statement("WorkersAccount", {"AWS": ACCOUNT}),
    statement(
        "DenyInsecureTransport", "*", "Deny", Condition={"Bool": {"aws:SecureTransport": "false"}}
    ),
)


def write_config(envs: dict[str, dict[str, Any]]) -> None:
    document = {"default_env": "local", "environments": {"local": {}, **envs}}
    Path("raasctl.yaml").write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML


def sqs_env(url: str, *, deployed: bool = False, endpoint_url: str | None = None) -> dict[str, Any]:
    return {
        "deployed": deployed,
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url},
        "queue": {"kind": "sqs", "url": url},
    }


def create_queue(sqs: Any, name: str, queue_policy: str | None = None, **attributes: str) -> str:
    if queue_policy:
        attributes["Policy"] = queue_policy
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def check_json(runner: CliRunner, *args: str) -> tuple[Result, list[dict[str, Any]]]:
    result = runner.invoke(main, ["access", "check", *args, "--format", "json"])
    assert result.exit_code in (0, 3), result.stderr
    return result, json.loads(result.stdout)


def permissions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["action"]: row for row in report["permissions"]}


@pytest.fixture
def moto() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


# --------------------------------------------------------------------------- access check


def test_embedded_environment_needs_no_aws_access(runner: CliRunner) -> None:
    result = runner.invoke(main, ["access", "check"])

    assert result.exit_code == 0, result.stderr
    assert "local: embedded" in result.stdout
    assert "embedded: no AWS access needed" in result.stdout


def test_all_envs_against_moto(runner: CliRunner, moto: Any) -> None:
    write_config(
        {
            "granted": sqs_env(create_queue(moto, "granted", GRANTED_TO_CALLER)),
            "partner": sqs_env(create_queue(moto, "partner", PARTNER_ONLY)),
            "fenced": sqs_env(create_queue(moto, "fenced", FENCED)),
            "vpce": sqs_env(create_queue(moto, "vpce", VPCE_FOR_CALLER)),
            "sealed": sqs_env(
                create_queue(moto, "sealed", GRANTED_TO_CALLER, KmsMasterKeyId="alias/raas")
            ),
        }
    )

    result, reports = check_json(runner, "--all-envs")

    assert result.exit_code == 3  # `fenced` is denied
    by_env = {report["env"]: report for report in reports}
    assert [report["env"] for report in reports] == [
        "local",
        "granted",
        "partner",
        "fenced",
        "vpce",
        "sealed",
    ]
    assert {env: report["status"] for env, report in by_env.items()} == {
        "local": "embedded",
        "granted": "ok",
        "partner": "indeterminate",
        "fenced": "denied",
        "vpce": "indeterminate",
        "sealed": "ok",
    }
    granted = by_env["granted"]
    assert granted["credentials"]["source"] == "env"
    assert granted["caller"]["account"] == ACCOUNT
    assert granted["queues"][0]["exists"] is True and granted["queues"][0]["answered"] is True
    assert granted["identity_source"].startswith("unknown: iam:SimulatePrincipalPolicy")
    row = permissions(granted)["sqs:ChangeMessageVisibility"]
    assert set(row) == {
        "queue",
        "action",
        "queue_policy",
        "identity",
        "decision",
        "statements",
        "note",
    }
    assert row == {
        "queue": "granted",
        "action": "sqs:ChangeMessageVisibility",
        "queue_policy": "allowed",
        "identity": "unknown",
        "decision": "allowed",
        "statements": ["resource:WorkersAccount"],
        "note": None,
    }
    # Same account: a policy for another account grants nothing, the identity side may.
    partner = permissions(by_env["partner"])["sqs:SendMessage"]
    assert (partner["queue_policy"], partner["decision"]) == ("implicit_deny", "indeterminate")
    for fenced in permissions(by_env["fenced"]).values():
        assert fenced["decision"] == "explicit_deny"
        assert fenced["statements"] == ["resource:DenyOutsidePartner"]
    vpce = permissions(by_env["vpce"])["sqs:ReceiveMessage"]
    assert vpce["decision"] == "indeterminate"
    assert vpce["statements"] == ["resource:ViaEndpoint"]
    assert "aws:SourceVpce" in vpce["note"]
    sealed = permissions(by_env["sealed"])
    assert by_env["sealed"]["queues"][0]["kms_key"] == "alias/raas"
    assert "kms:GenerateDataKey" in sealed["sqs:SendMessage"]["note"]
    assert "kms:Decrypt" in sealed["sqs:ReceiveMessage"]["note"]

    table = runner.invoke(main, ["access", "check", "--all-envs"])
    assert table.exit_code == 3
    assert "fenced: denied" in table.stdout
    assert "resource:DenyOutsidePartner" in table.stdout


def test_strict_fails_an_indeterminate_answer(runner: CliRunner, moto: Any) -> None:
    write_config({"vpce": sqs_env(create_queue(moto, "vpce", VPCE))})

    lenient = runner.invoke(main, ["--env", "vpce", "access", "check"])
    strict = runner.invoke(main, ["access", "check", "--env", "vpce", "--strict"])

    assert lenient.exit_code == 0, lenient.stderr
    assert "vpce: indeterminate" in lenient.stdout
    assert strict.exit_code == 3


def test_deployed_environment_reached_with_long_term_keys_warns(
    runner: CliRunner, moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    url = create_queue(moto, "jobs", GRANTED)
    write_config({"uat": sqs_env(url, deployed=True), "dev": sqs_env(url)})

    result, reports = check_json(runner, "--all-envs")

    assert result.exit_code == 0, result.stderr
    by_env = {report["env"]: report for report in reports}
    assert by_env["uat"]["credentials"]["key_kind"] == "long-term"
    long_term = {
        env: [w for w in report["warnings"] if "long-term keys" in w]
        for env, report in by_env.items()
    }
    assert len(long_term["uat"]) == 1
    assert long_term["dev"] == []
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warned = [line for line in logged if line["code"] == "RAAS_CREDENTIALS_LONG_TERM"]
    assert [line["env"] for line in warned] == ["uat"]
    assert warned[0]["level"] == "warning"


def test_env_and_all_envs_exclude_each_other(runner: CliRunner) -> None:
    result = runner.invoke(main, ["access", "check", "--env", "local", "--all-envs"])

    assert result.exit_code == 2
    assert "--env and --all-envs exclude each other" in result.stderr


def test_unknown_environment_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["access", "check", "--env", "nowhere"])

    assert result.exit_code == 2
    assert "RAAS_UNKNOWN_ENV" in result.stderr


def test_over_moto_server_the_identity_side_is_unknown(runner: CliRunner, moto_url: str) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    write_config(
        {
            "granted": sqs_env(
                create_queue(sqs, "granted", GRANTED_TO_CALLER), endpoint_url=moto_url
            ),
            "tls": sqs_env(create_queue(sqs, "tls", TLS_ONLY), endpoint_url=moto_url),
        }
    )

    granted, reports = check_json(runner, "--env", "granted")
    tls, tls_reports = check_json(runner, "--env", "tls")

    assert granted.exit_code == 0, granted.stderr
    report = reports[0]
    assert "ResponseParserError" in report["identity_source"]
    assert {row["identity"] for row in report["permissions"]} == {"unknown"}
    assert {row["decision"] for row in report["permissions"]} == {"allowed"}
    # http:// to moto is not TLS, and the check knows it: aws:SecureTransport is false.
    assert tls.exit_code == 3
    for row in tls_reports[0]["permissions"]:
        assert row["decision"] == "explicit_deny"
        assert row["statements"] == ["resource:DenyInsecureTransport"]


# --------------------------------------------------------------------------- access explain

QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:jobs"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/raas-worker"


def explain(
    runner: CliRunner,
    document: str | None,
    *args: str,
    action: str = "sqs:SendMessage",
    principal: str = ROLE,
) -> Result:
    path = Path("policy.json")
    if document is not None:
        path.write_text(document, encoding="utf-8")
    return runner.invoke(
        main,
        [
            "access",
            "explain",
            "--policy",
            str(path),
            "--principal",
            principal,
            "--action",
            action,
            "--resource",
            QUEUE_ARN,
            *args,
            "--format",
            "json",
        ],
    )


def test_explain_allowed(runner: CliRunner) -> None:
    result = explain(runner, GRANTED)

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "decision": "allowed",
        "statements": ["WorkersAccount"],
        "missing_context": [],
    }


def test_explain_account_principal_matches_its_roles(runner: CliRunner) -> None:
    document = policy(statement("Account", {"AWS": ACCOUNT}))

    assert explain(runner, document).exit_code == 0
    assert explain(runner, document, principal=f"arn:aws:iam::{PARTNER}:role/x").exit_code == 3


def test_explain_denied(runner: CliRunner) -> None:
    explicit = explain(runner, FENCED, "--context", f"aws:PrincipalAccount={ACCOUNT}")
    implicit = explain(runner, PARTNER_ONLY)

    assert explicit.exit_code == 3
    assert json.loads(explicit.stdout) == {
        "decision": "explicit_deny",
        "statements": ["DenyOutsidePartner"],
        "missing_context": [],
    }
    assert implicit.exit_code == 3
    assert json.loads(implicit.stdout) == {
        "decision": "implicit_deny",
        "statements": [],
        "missing_context": [],
    }


def test_explain_indeterminate_until_the_context_is_given(runner: CliRunner) -> None:
    unknown = explain(runner, VPCE)
    strict = explain(runner, VPCE, "--strict")
    given = explain(runner, VPCE, "--context", "aws:SourceVpce=vpce-0abc")
    other = explain(runner, VPCE, "--context", "aws:SourceVpce=vpce-other")

    assert unknown.exit_code == 0
    assert json.loads(unknown.stdout) == {
        "decision": "indeterminate",
        "statements": ["ViaEndpoint"],
        "missing_context": ["aws:SourceVpce"],
    }
    assert strict.exit_code == 3
    assert strict.stdout == unknown.stdout
    assert (given.exit_code, json.loads(given.stdout)["decision"]) == (0, "allowed")
    assert (other.exit_code, json.loads(other.stdout)["decision"]) == (3, "implicit_deny")


def test_explain_repeated_context_values_form_a_list(runner: CliRunner) -> None:
    any_team = policy(
        statement(
            "TaggedTeam", "*", Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": "team"}}
        )
    )
    only_known = policy(
        statement(
            "KnownTags",
            "*",
            Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["team", "env"]}},
        )
    )
    tags = ("--context", "aws:TagKeys=team", "--context", "aws:TagKeys=owner")

    # As a list, one of the values is `team` ...
    assert json.loads(explain(runner, any_team, *tags).stdout)["decision"] == "allowed"
    # ... and not all of them are known tags.
    assert json.loads(explain(runner, only_known, *tags).stdout)["decision"] == "implicit_deny"


def test_explain_expands_policy_variables(runner: CliRunner) -> None:
    # Read as literal text, "${aws:ResourceTag/blocked}" never equalled "yes" and the
    # answer was a confident "allowed".
    document = policy(
        statement("AllowAll", "*"),
        statement(
            "DenyBlocked",
            "*",
            "Deny",
            Condition={"StringEquals": {"aws:PrincipalTag/blocked": "${aws:ResourceTag/blocked}"}},
        ),
    )
    principal_tag = ("--context", "aws:PrincipalTag/blocked=yes")

    blocked = explain(runner, document, *principal_tag, "--context", "aws:ResourceTag/blocked=yes")
    unknown = explain(runner, document, *principal_tag)
    untagged = explain(runner, document, *principal_tag, "--absent", "aws:ResourceTag/blocked")

    assert blocked.exit_code == 3
    assert json.loads(blocked.stdout) == {
        "decision": "explicit_deny",
        "statements": ["DenyBlocked"],
        "missing_context": [],
    }
    assert unknown.exit_code == 0
    assert json.loads(unknown.stdout) == {
        "decision": "indeterminate",
        "statements": ["DenyBlocked"],
        "missing_context": ["aws:ResourceTag/blocked"],
    }
    assert (untagged.exit_code, json.loads(untagged.stdout)["decision"]) == (0, "allowed")


@pytest.mark.parametrize(
    "condition",
    [
        {"Null": {"aws:SourceVpce": "true"}},
        {"StringNotEqualsIfExists": {"aws:SourceVpce": "vpce-0abc"}},
    ],
    ids=["Null", "IfExists"],
)
def test_explain_absent_key_settles_null_and_if_exists(
    runner: CliRunner, condition: dict[str, Any]
) -> None:
    document = policy(
        statement("WorkersAccount", {"AWS": ACCOUNT}),
        statement("DenyOutsideEndpoint", "*", "Deny", Condition=condition),
    )

    unknown = explain(runner, document)
    absent = explain(runner, document, "--absent", "aws:SourceVpce")
    via_endpoint = explain(runner, document, "--context", "aws:SourceVpce=vpce-0abc")

    assert unknown.exit_code == 0
    assert json.loads(unknown.stdout) == {
        "decision": "indeterminate",
        "statements": ["DenyOutsideEndpoint"],
        "missing_context": ["aws:SourceVpce"],
    }
    assert absent.exit_code == 3
    assert json.loads(absent.stdout) == {
        "decision": "explicit_deny",
        "statements": ["DenyOutsideEndpoint"],
        "missing_context": [],
    }
    assert (via_endpoint.exit_code, json.loads(via_endpoint.stdout)["decision"]) == (0, "allowed")


def test_explain_key_both_given_and_absent_is_a_usage_error(runner: CliRunner) -> None:
    both = explain(
        runner, VPCE, "--context", "aws:SourceVpce=vpce-0abc", "--absent", "AWS:sourcevpce"
    )
    pair = explain(runner, VPCE, "--absent", "aws:SourceVpce=vpce-0abc")

    for result in (both, pair):
        assert result.exit_code == 2
        assert result.stdout == ""
    assert "--context and with --absent" in both.stderr
    assert "expected a context key" in pair.stderr


def test_explain_mixed_identity_and_resource_statements(runner: CliRunner) -> None:
    identity_statement = {"Sid": "Identity", "Effect": "Allow", "Action": "sqs:*", "Resource": "*"}
    result = explain(runner, policy(statement("Resource", "*"), identity_statement))

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "split identity and resource policies" in result.stderr
    assert "identity=True" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explain_bad_policy_file_is_a_one_line_error(runner: CliRunner) -> None:
    missing = runner.invoke(
        main,
        [
            "access",
            "explain",
            "--policy",
            "nowhere.json",
            "--principal",
            ROLE,
            "--action",
            "sqs:SendMessage",
        ],
    )
    invalid = explain(runner, '{"Statement": [')
    not_a_policy = explain(runner, '{"Version": "2012-10-17"}')

    for result in (missing, invalid, not_a_policy):
        assert result.exit_code == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert "RAAS_POLICY_INVALID" in result.stderr
    assert "nowhere.json" in missing.stderr
    assert "policy.json" in invalid.stderr and "policy.json" in not_a_policy.stderr


def test_explain_bad_context_is_a_usage_error(runner: CliRunner) -> None:
    result = explain(runner, GRANTED, "--context", "aws:SourceVpce")

    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.stderr


def test_explain_table_output(runner: CliRunner) -> None:
    Path("policy.json").write_text(VPCE, encoding="utf-8")

    result = runner.invoke(
        main,
        [
            "access",
            "explain",
            "--policy",
            "policy.json",
            "--principal",
            ROLE,
            "--action",
            "sqs:ReceiveMessage",
            "--resource",
            QUEUE_ARN,
        ],
    )

    assert result.exit_code == 0
    for text in ("decision", "indeterminate", "ViaEndpoint", "aws:SourceVpce"):
        assert text in result.stdout


def test_all_envs_reports_every_environment_and_exits_by_the_worst_cause(
    runner: CliRunner, moto: Any
) -> None:
    granted = create_queue(moto, "granted", GRANTED_TO_CALLER)
    no_profile = {**sqs_env(granted), "aws": {"region": "us-east-1", "profile": "nobody"}}
    missing = sqs_env(f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/never-created")
    write_config({"noprofile": no_profile, "granted": sqs_env(granted), "missing": missing})

    result = runner.invoke(main, ["access", "check", "--all-envs", "--format", "json"])

    # The missing profile (a configuration error, 2) is worse than the missing queue (3).
    assert result.exit_code == 2, result.stderr
    by_env = {report["env"]: report for report in json.loads(result.stdout)}
    assert list(by_env) == ["local", "noprofile", "granted", "missing"]
    assert by_env["noprofile"]["status"] == "error"
    assert by_env["noprofile"]["error_codes"] == ["RAAS_CREDENTIALS_MISSING"]
    assert "'nobody'" in by_env["noprofile"]["errors"][0]
    assert by_env["granted"]["status"] == "ok"
    assert by_env["missing"]["error_codes"] == ["RAAS_QUEUE_NOT_FOUND"]
    assert "RAAS_CREDENTIALS_MISSING" in result.stderr and "RAAS_QUEUE_NOT_FOUND" in result.stderr

    table = runner.invoke(main, ["access", "check", "--all-envs"])
    assert table.exit_code == 2
    for text in ("noprofile: error", "RAAS_CREDENTIALS_MISSING", "granted: ok", "missing: error"):
        assert text in table.stdout

    write_config({"granted": sqs_env(granted), "missing": missing})
    assert runner.invoke(main, ["access", "check", "--all-envs"]).exit_code == 3
