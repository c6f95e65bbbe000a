"""`check_environment` and `explain` against moto (raasctl/access.py).

moto neither enforces queue policies nor implements iam:SimulatePrincipalPolicy: the queue
policies here are judged by the offline evaluator, and where a test needs a known identity
side it answers SimulatePrincipalPolicy itself through a botocore `before-call` hook.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from raasctl.access import SQS_ACTIONS, check_environment
from raasctl.access_report import EnvReport, PermissionRow
from raasctl.aws import AwsClients
from raasctl.config import EnvironmentConfig
from raasctl.errors import ConfigError, UsageError
from raasctl.explain import explain, parse_context

ACCOUNT = "123456789012"  # moto's default account: the queues live here
PARTNER = "999988887777"  # an account that is neither the caller's nor the queue's
# moto's caller (GetCallerIdentity with its default keys). A queue policy naming the caller
# itself grants on its own; one naming only its account leaves it to the identity side.
CALLER = f"arn:aws:sts::{ACCOUNT}:user/moto"
WORKER_ACCOUNT = "111111111111"  # the caller's account in the cross-account tests
READ_ONLY = {
    "GetCallerIdentity",
    "GetQueueAttributes",
    "GetQueueUrl",
    "GetRole",
    "SimulatePrincipalPolicy",
}


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


@cache
def admin(service: str) -> Any:
    """A client with moto's default keys: it acts in ACCOUNT whatever a test sets in the
    environment for the check itself (one session, so models load once)."""
    return _ADMIN.client(service)


_ADMIN = boto3.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)


def sqs() -> Any:
    return admin("sqs")


def queue_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:sqs:us-east-1:{account}:{name}"


def statement(sid: str, principal: Any, **extra: Any) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": "sqs:*",
        "Resource": "*",
        **extra,
    }


def make_queue(name: str, *statements: dict[str, Any], **attributes: str) -> str:
    if statements:
        attributes["Policy"] = json.dumps({"Version": "2012-10-17", "Statement": statements})
    return str(sqs().create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def sqs_env(
    url: str, *, deployed: bool = False, dlq_url: str | None = None, endpoint_url: str | None = None
) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate(
        {
            "deployed": deployed,
            "aws": {"region": "us-east-1", "endpoint_url": endpoint_url},
            "queue": {"kind": "sqs", "url": url, "dlq_url": dlq_url},
        }
    )


def rows(report: EnvReport, queue: str) -> dict[str, PermissionRow]:
    found = {row.action: row for row in report.permissions if row.queue == queue}
    assert set(found) == set(SQS_ACTIONS)
    return found


def simulate(
    aws: AwsClients,
    decisions: Mapping[str, str],
    *,
    missing: Sequence[str] = (),
    policy_id: str = "WorkerPolicy",
) -> list[str]:
    """Answer iam:SimulatePrincipalPolicy as IAM would: `decisions` maps an action to
    allowed / explicitDeny / implicitDeny. Returns the PolicySourceArns asked about."""
    asked: list[str] = []

    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        body = params["body"]
        asked.append(body["PolicySourceArn"])
        resource = body["ResourceArns.member.1"]
        actions = [v for k, v in sorted(body.items()) if k.startswith("ActionNames.member.")]
        results = [
            {
                "EvalActionName": action,
                "EvalResourceName": resource,
                "EvalDecision": decisions.get(action, "implicitDeny"),
                "MatchedStatements": []
                if decisions.get(action, "implicitDeny") == "implicitDeny"
                else [{"SourcePolicyId": policy_id, "SourcePolicyType": "IAM Policy"}],
                "MissingContextValues": list(missing),
            }
            for action in actions
        ]
        return AWSResponse("", 200, {}, None), {"EvaluationResults": results, "IsTruncated": False}

    aws.session.events.register("before-call.iam.SimulatePrincipalPolicy", answer)
    return asked


def everything(decision: str) -> dict[str, str]:
    return dict.fromkeys(SQS_ACTIONS, decision)


def check(env: EnvironmentConfig, aws: AwsClients | None = None) -> EnvReport:
    return check_environment("uat", env, aws or AwsClients("uat", env.aws))


# --------------------------------------------------------------------------- queue policies


def test_queue_policy_granting_the_callers_account_leaves_it_to_the_identity_side(
    moto: None,
) -> None:
    # SQS's default access policy shape: within the account an account principal delegates to
    # the account's identity policies, so with the identity side unknown nothing is decided.
    url = make_queue(
        "granted", statement("WorkersAccount", {"AWS": f"arn:aws:iam::{ACCOUNT}:root"})
    )
    env = sqs_env(url)

    report = check(env)

    assert report.status == "indeterminate"
    assert not report.failed(strict=False) and report.failed(strict=True)
    for row in rows(report, "granted").values():
        assert (row.queue_policy, row.identity, row.decision) == (
            "implicit_deny",
            "unknown",
            "indeterminate",
        )
        assert row.note is not None
        assert f"grants {row.action} to the account {ACCOUNT}" in row.note
    assert report.identity_source is not None
    assert report.identity_source.startswith("unknown: iam:SimulatePrincipalPolicy unavailable")
    assert report.caller is not None and report.caller.account == ACCOUNT

    aws = AwsClients("uat", env.aws)
    simulate(aws, everything("implicitDeny"))
    denied = check(env, aws)
    assert denied.status == "denied"
    aws = AwsClients("uat", env.aws)
    simulate(aws, everything("allowed"))
    allowed = check(env, aws)
    assert allowed.status == "ok"
    assert rows(allowed, "granted")["sqs:SendMessage"].statements == ["identity:WorkerPolicy"]


def test_queue_policy_naming_the_caller_allows_every_action(moto: None) -> None:
    url = make_queue("granted", statement("WorkersAccount", {"AWS": CALLER}))

    report = check(sqs_env(url))

    assert report.status == "ok"
    assert not report.failed(strict=True)
    for row in rows(report, "granted").values():
        assert (row.queue_policy, row.identity, row.decision) == ("allowed", "unknown", "allowed")
        assert row.statements == ["resource:WorkersAccount"]


def test_same_account_policy_for_another_account_leaves_it_to_the_identity_side(
    moto: None,
) -> None:
    url = make_queue("partner", statement("PartnerOnly", {"AWS": PARTNER}))
    env = sqs_env(url)

    unknown = check(env)
    row = rows(unknown, "partner")["sqs:SendMessage"]
    assert (row.queue_policy, row.identity, row.decision) == (
        "implicit_deny",
        "unknown",
        "indeterminate",
    )
    assert unknown.status == "indeterminate"
    assert not unknown.failed(strict=False) and unknown.failed(strict=True)

    aws = AwsClients("uat", env.aws)
    simulate(aws, everything("allowed"))
    granted = rows(check(env, aws), "partner")["sqs:SendMessage"]
    assert (granted.identity, granted.decision) == ("allowed", "allowed")
    assert granted.statements == ["identity:WorkerPolicy"]

    aws = AwsClients("uat", env.aws)
    simulate(aws, everything("implicitDeny"))
    report = check(env, aws)
    denied = rows(report, "partner")["sqs:SendMessage"]
    assert denied.decision == "implicit_deny"
    assert report.status == "denied"
    assert denied.note is not None
    assert f"only to other principals: resource:PartnerOnly ({PARTNER})" in denied.note


def test_explicit_deny_for_other_accounts_names_its_sid(moto: None) -> None:
    url = make_queue(
        "fenced",
        statement("PartnerSend", {"AWS": PARTNER}),
        {
            "Sid": "DenyOutsidePartner",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:PrincipalAccount": PARTNER}},
        },
    )

    report = check(sqs_env(url))

    assert report.status == "denied"
    assert report.failed(strict=False)
    for row in rows(report, "fenced").values():
        assert row.decision == "explicit_deny"
        assert row.statements == ["resource:DenyOutsidePartner"]


def test_condition_on_source_vpce_is_indeterminate(moto: None) -> None:
    url = make_queue(
        "vpce",
        statement(
            "ViaEndpoint",
            {"AWS": CALLER},
            Condition={"StringEquals": {"aws:SourceVpce": "vpce-0abc"}},
        ),
    )

    report = check(sqs_env(url))

    for row in rows(report, "vpce").values():
        assert row.queue_policy == "indeterminate"
        assert row.decision == "indeterminate"
        assert row.statements == ["resource:ViaEndpoint"]
        assert row.note is not None and "aws:SourceVpce" in row.note
    assert report.status == "indeterminate"
    assert not report.failed(strict=False) and report.failed(strict=True)


def test_kms_encrypted_queue_notes_the_key_permissions(moto: None) -> None:
    url = make_queue(
        "sealed", statement("WorkersAccount", {"AWS": CALLER}), KmsMasterKeyId="alias/raas"
    )

    report = check(sqs_env(url))

    found = rows(report, "sealed")
    assert report.queues[0].kms_key == "alias/raas"
    assert "kms:GenerateDataKey" in (found["sqs:SendMessage"].note or "")
    assert "kms:Decrypt" in (found["sqs:ReceiveMessage"].note or "")
    assert found["sqs:DeleteMessage"].note is None
    assert found["sqs:SendMessage"].decision == "allowed"  # a note, not a denial


# --------------------------------------------------------------------------- cross-account


@pytest.fixture
def worker_in_another_account(moto: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The caller is a session of role /raas/worker in WORKER_ACCOUNT; the queues stay in
    ACCOUNT. moto keeps one SQS per account and picks it from the caller's key, so each SQS
    request names the queue owner's account, as AWS itself would route it."""
    monkeypatch.setenv("MOTO_ACCOUNT_ID", WORKER_ACCOUNT)
    admin("iam").create_role(RoleName="worker", Path="/raas/", AssumeRolePolicyDocument="{}")
    monkeypatch.delenv("MOTO_ACCOUNT_ID")
    credentials = admin("sts").assume_role(
        RoleArn=f"arn:aws:iam::{WORKER_ACCOUNT}:role/raas/worker", RoleSessionName="uat-1"
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    yield


def cross_account(env: EnvironmentConfig) -> AwsClients:
    aws = AwsClients("uat", env.aws)

    def queue_owner(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = ACCOUNT

    aws.session.events.register("before-sign.sqs", queue_owner)
    return aws


def test_cross_account_caller_needs_the_queue_policy_too(worker_in_another_account: None) -> None:
    partner = make_queue("partner", statement("PartnerOnly", {"AWS": PARTNER}))
    env = sqs_env(partner)

    report = check(env, cross_account(env))

    assert report.caller is not None
    assert report.caller.account == WORKER_ACCOUNT
    assert report.caller.arn.startswith(f"arn:aws:sts::{WORKER_ACCOUNT}:assumed-role/worker/")
    # iam:GetRole found the role behind the session, with its path.
    assert report.caller.principal == f"arn:aws:iam::{WORKER_ACCOUNT}:role/raas/worker"
    assert report.credentials is not None and report.credentials.key_kind == "temporary"
    row = rows(report, "partner")["sqs:ReceiveMessage"]
    # Across accounts both sides must allow: the queue policy's silence decides.
    assert (row.queue_policy, row.identity, row.decision) == (
        "implicit_deny",
        "unknown",
        "implicit_deny",
    )
    assert row.note is not None and "resource:PartnerOnly" in row.note
    assert report.status == "denied"


def test_cross_account_grant_needs_the_identity_side_as_well(
    worker_in_another_account: None,
) -> None:
    url = make_queue("shared", statement("Workers", {"AWS": f"arn:aws:iam::{WORKER_ACCOUNT}:root"}))
    env = sqs_env(url)

    unknown = rows(check(env, cross_account(env)), "shared")["sqs:SendMessage"]
    assert (unknown.queue_policy, unknown.decision) == ("allowed", "indeterminate")

    aws = cross_account(env)
    asked = simulate(aws, everything("allowed"))
    allowed = rows(check(env, aws), "shared")["sqs:SendMessage"]
    assert allowed.decision == "allowed"
    assert allowed.statements == ["identity:WorkerPolicy", "resource:Workers"]
    # The role is simulated, not its session.
    assert set(asked) == {f"arn:aws:iam::{WORKER_ACCOUNT}:role/raas/worker"}


# --------------------------------------------------------------------------- identity side


def assume(role_arn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = admin("sts").assume_role(RoleArn=role_arn, RoleSessionName="uat-1")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])


def test_role_arn_from_get_role_is_known_context(
    moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin("iam").create_role(RoleName="worker", Path="/raas/", AssumeRolePolicyDocument="{}")
    url = make_queue(
        "roles",
        statement(
            "RaasRoles",
            "*",
            Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/raas/*"}},
        ),
    )
    env = sqs_env(url)

    assume(f"arn:aws:iam::{ACCOUNT}:role/raas/worker", monkeypatch)
    known = check(env)
    assume(f"arn:aws:iam::{ACCOUNT}:role/raas/ghost", monkeypatch)  # no such role
    unknown = check(env)

    assert rows(known, "roles")["sqs:SendMessage"].decision == "allowed"
    assert rows(known, "roles")["sqs:SendMessage"].statements == ["resource:RaasRoles"]
    # Without iam:GetRole's answer the role's ARN (its path) is not known.
    row = rows(unknown, "roles")["sqs:SendMessage"]
    assert row.decision == "indeterminate"
    assert "aws:PrincipalArn" in (row.note or "")
    assert unknown.caller is not None and unknown.caller.principal is None
    assert unknown.identity_source == "unknown: iam:GetRole for ghost failed (NoSuchEntity)"


def test_same_account_without_queue_policy_is_decided_by_the_identity_side(moto: None) -> None:
    url = make_queue("plain")
    env = sqs_env(url)
    aws = AwsClients("uat", env.aws)
    simulate(
        aws, {**everything("allowed"), "sqs:DeleteMessage": "explicitDeny"}, policy_id="RaasWorker"
    )

    report = check(env, aws)

    found = rows(report, "plain")
    assert found["sqs:SendMessage"].queue_policy == "implicit_deny"
    assert found["sqs:SendMessage"].decision == "allowed"
    assert found["sqs:SendMessage"].statements == ["identity:RaasWorker"]
    assert "no queue policy" in (found["sqs:SendMessage"].note or "")
    assert found["sqs:DeleteMessage"].decision == "explicit_deny"
    assert found["sqs:DeleteMessage"].statements == ["identity:RaasWorker"]
    assert report.identity_source == "iam:SimulatePrincipalPolicy"


def test_simulator_missing_context_is_not_taken_as_absent(moto: None) -> None:
    url = make_queue("plain")
    env = sqs_env(url)
    aws = AwsClients("uat", env.aws)
    simulate(aws, everything("allowed"), missing=["aws:SourceIp"])

    row = rows(check(env, aws), "plain")["sqs:SendMessage"]

    assert (row.identity, row.decision) == ("indeterminate", "indeterminate")
    assert "aws:SourceIp" in (row.note or "")


# --------------------------------------------------------------------------- queues


def test_dlq_is_found_from_the_redrive_policy_and_checked(moto: None) -> None:
    dlq = make_queue("jobs-dlq")
    url = make_queue(
        "jobs",
        statement("WorkersAccount", {"AWS": CALLER}),
        RedrivePolicy=json.dumps(
            {"deadLetterTargetArn": queue_arn("jobs-dlq"), "maxReceiveCount": 5}
        ),
    )

    report = check(sqs_env(url))

    assert [(q.role, q.name, q.url) for q in report.queues] == [
        ("queue", "jobs", url),
        ("dlq", "jobs-dlq", dlq),
    ]
    assert rows(report, "jobs")["sqs:SendMessage"].decision == "allowed"
    # No policy on the DLQ and an unknown identity side: it may or may not be allowed.
    assert rows(report, "jobs-dlq")["sqs:SendMessage"].decision == "indeterminate"
    assert report.warnings == []


def test_queue_without_dlq_is_a_warning(moto: None) -> None:
    url = make_queue("lonely", statement("WorkersAccount", {"AWS": CALLER}))

    report = check(sqs_env(url))
    itself = check(sqs_env(url, dlq_url=url))

    assert report.status == "ok"
    assert report.warnings == [
        "queue lonely has no DLQ: no dlq_url in the config and no RedrivePolicy"
    ]
    assert itself.warnings == ["queue lonely is configured as its own DLQ (dlq_url)"]
    assert [queue.role for queue in itself.queues] == ["queue"]
    assert len(itself.permissions) == len(SQS_ACTIONS)


def test_missing_queues_are_errors(moto: None) -> None:
    gone = make_queue("gone-dlq")
    url = make_queue(
        "orphan",
        RedrivePolicy=json.dumps(
            {"deadLetterTargetArn": queue_arn("gone-dlq"), "maxReceiveCount": 5}
        ),
    )
    sqs().delete_queue(QueueUrl=gone)  # the redrive target, deleted since
    missing = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/never-created"

    orphan = check(sqs_env(url))
    nothing = check(sqs_env(missing))

    assert orphan.status == "error"
    assert any("gone-dlq" in error and "does not exist" in error for error in orphan.errors)
    assert nothing.status == "error"
    assert nothing.errors == ["queue never-created: does not exist"]
    assert nothing.permissions == []
    assert nothing.failed(strict=False)


@set_initial_no_auth_action_count(3)
def test_refused_get_queue_attributes_is_reported_as_denied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with mock_aws():
        iam = admin("iam")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        url = make_queue("guarded")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

        report = check(sqs_env(url))

    assert report.status == "error"
    assert report.errors == ["queue guarded: GetQueueAttributes refused (AccessDenied)"]
    found = rows(report, "guarded")
    assert found["sqs:GetQueueAttributes"].decision == "implicit_deny"
    assert "not authorized to perform: sqs:GetQueueAttributes" in (
        found["sqs:GetQueueAttributes"].note or ""
    )
    assert all(row.queue_policy == "unknown" for row in found.values())


def test_check_only_reads(moto: None) -> None:
    dlq = make_queue("jobs-dlq")
    url = make_queue(
        "jobs",
        RedrivePolicy=json.dumps(
            {"deadLetterTargetArn": queue_arn("jobs-dlq"), "maxReceiveCount": 1}
        ),
    )
    sqs().send_message(QueueUrl=url, MessageBody="untouched")
    env = sqs_env(url)
    aws = AwsClients("uat", env.aws)
    operations: list[str] = []
    aws.session.events.register("before-call", lambda model, **_: operations.append(model.name))

    check(env, aws)

    assert operations and set(operations) <= READ_ONLY
    counts = sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (
        counts["ApproximateNumberOfMessages"],
        counts["ApproximateNumberOfMessagesNotVisible"],
    ) == ("1", "0")
    dlq_counts = sqs().get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert dlq_counts["ApproximateNumberOfMessages"] == "0"


# --------------------------------------------------------------------------- environments


def test_embedded_environment_needs_no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials that would be refused: an embedded environment never looks at them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAIOSFODNN7EXAMPLE")
    env = EnvironmentConfig()

    report = check_environment("local", env, AwsClients("local", env.aws))

    assert report.status == "embedded"
    assert report.to_json()["note"] == "embedded: no AWS access needed"
    assert report.credentials is None and report.permissions == []
    assert not report.failed(strict=True)


@pytest.mark.parametrize("deployed", [True, False])
def test_deployed_environment_with_long_term_keys_warns(
    moto: None, monkeypatch: pytest.MonkeyPatch, deployed: bool
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    url = make_queue("jobs", statement("WorkersAccount", {"AWS": CALLER}))

    report = check(sqs_env(url, deployed=deployed))

    assert report.credentials is not None and report.credentials.key_kind == "long-term"
    long_term = [w for w in report.warnings if "long-term keys" in w]
    assert len(long_term) == (1 if deployed else 0)
    assert report.status == "ok"  # a warning, not a failure


# --------------------------------------------------------------------------- explain


def test_parse_context_makes_lists_of_repeated_keys() -> None:
    assert parse_context(["aws:SourceVpce=vpce-1"]) == {"aws:SourceVpce": "vpce-1"}
    assert parse_context(["aws:TagKeys=a", "AWS:tagkeys=b", "k=x=y"]) == {
        "aws:TagKeys": ["a", "b"],
        "k": "x=y",
    }
    assert parse_context(["aws:SourceVpce="]) == {"aws:SourceVpce": ""}
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_context(["aws:SourceVpce"])


def test_explain_reads_a_policy_without_principals_as_an_identity_policy(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "identity.json"
    policy.write_text(
        json.dumps(
            {
                "Statement": [
                    {"Sid": "Send", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}
                ]
            }
        )
    )

    decision = explain(
        policy, f"arn:aws:iam::{ACCOUNT}:role/w", "sqs:SendMessage", queue_arn("jobs")
    )

    assert decision.to_json() == {
        "decision": "allowed",
        "statements": ["Send"],
        "missing_context": [],
    }


def test_explain_names_the_file_of_an_invalid_policy(tmp_path: Path) -> None:
    policy = tmp_path / "odd.json"
    policy.write_text(
        json.dumps(
            {
                "Statement": [
                    statement("Odd", "*", Condition={"StringSometimes": {"aws:SourceVpce": "x"}})
                ]
            }
        )
    )

    with pytest.raises(ConfigError) as raised:
        explain(policy, ACCOUNT, "sqs:SendMessage", queue_arn("jobs"))

    assert raised.value.exit_code == 2
    assert raised.value.code == "RAAS_POLICY_INVALID"
    assert raised.value.message.startswith(f"policy file {policy}: ")
    assert "StringSometimes" in raised.value.message
