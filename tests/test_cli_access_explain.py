"""`raasctl access explain`: two policies combined, errors with suggestions, the context the
principal gives, and an unknown resource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raasctl.cli import main

ACCOUNT = "111122223333"
PARTNER = "444455556666"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCOUNT}:jobs.fifo"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/raas-worker"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/raas-worker/i-1"
OTHER_ROLE = f"arn:aws:iam::{PARTNER}:role/raas-worker"
OTHER_SESSION = f"arn:aws:sts::{PARTNER}:assumed-role/raas-worker/ci-7"


def document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(
    sid: str, principal: Any = None, action: str = "sqs:SendMessage", **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": action,
        "Resource": QUEUE,
        **extra,
    }
    if principal is not None:
        out["Principal"] = principal
    return out


def deny(sid: str, principal: Any = None, **extra: Any) -> dict[str, Any]:
    return {**allow(sid, principal, "sqs:*", **extra), "Effect": "Deny"}


IDENTITY_SEND = document(allow("IdentitySend"))
IDENTITY_NOTHING = document(allow("IdentityReceive", action="sqs:ReceiveMessage"))
IDENTITY_DENY = document(deny("IdentityDeny"))
QUEUE_ACCOUNT = document(allow("OwnerAccount", {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
QUEUE_ROLE = document(allow("WorkerRole", {"AWS": ROLE}))
QUEUE_PARTNER = document(allow("PartnerAccount", {"AWS": PARTNER}))
QUEUE_PARTNER_ROLE = document(allow("PartnerRole", {"AWS": OTHER_ROLE}))
QUEUE_DENY = document(allow("WorkerRole", {"AWS": ROLE}), deny("DenyAll", "*"))


def write(name: str, content: dict[str, Any]) -> str:
    Path(name).write_text(json.dumps(content), encoding="utf-8")
    return name


def both(
    runner: CliRunner,
    identity: dict[str, Any] | None,
    queue: dict[str, Any] | None,
    principal: str,
    *args: str,
) -> Result:
    files: list[str] = []
    if identity is not None:
        files += ["--identity-policy", write("identity.json", identity)]
    if queue is not None:
        files += ["--resource-policy", write("queue.json", queue)]
    return runner.invoke(
        main,
        [
            "access",
            "explain",
            *files,
            "--principal",
            principal,
            "--action",
            "sqs:SendMessage",
            "--resource",
            QUEUE,
            *args,
            "--format",
            "json",
        ],
    )


# principal, identity policy, queue policy, decision, statements, identity verdict, queue verdict
TWO_POLICY_CASES: list[Any] = [
    # Same account: the identity side alone grants ...
    pytest.param(
        SESSION,
        IDENTITY_SEND,
        None,
        "allowed",
        ["identity:IdentitySend"],
        "allowed",
        "implicit_deny",
        True,
        id="same-identity-alone",
    ),
    # ... and so does a queue policy naming the role itself ...
    pytest.param(
        SESSION,
        IDENTITY_NOTHING,
        QUEUE_ROLE,
        "allowed",
        ["resource:WorkerRole"],
        "implicit_deny",
        "allowed",
        True,
        id="same-named-role",
    ),
    # ... but a queue policy naming only the account delegates to the identity side.
    pytest.param(
        SESSION,
        IDENTITY_NOTHING,
        QUEUE_ACCOUNT,
        "implicit_deny",
        [],
        "implicit_deny",
        "implicit_deny",
        True,
        id="same-account-principal",
    ),
    pytest.param(
        SESSION,
        IDENTITY_SEND,
        QUEUE_ACCOUNT,
        "allowed",
        ["identity:IdentitySend"],
        "allowed",
        "implicit_deny",
        True,
        id="same-account-and-identity",
    ),
    pytest.param(
        SESSION,
        IDENTITY_DENY,
        QUEUE_ROLE,
        "explicit_deny",
        ["identity:IdentityDeny"],
        "explicit_deny",
        "allowed",
        True,
        id="same-identity-deny-wins",
    ),
    pytest.param(
        SESSION,
        IDENTITY_SEND,
        QUEUE_DENY,
        "explicit_deny",
        ["resource:DenyAll"],
        "allowed",
        "explicit_deny",
        True,
        id="same-queue-deny-wins",
    ),
    # Across accounts both sides must allow.
    pytest.param(
        OTHER_SESSION,
        IDENTITY_SEND,
        QUEUE_PARTNER,
        "allowed",
        ["identity:IdentitySend", "resource:PartnerAccount"],
        "allowed",
        "allowed",
        False,
        id="cross-both",
    ),
    pytest.param(
        OTHER_SESSION,
        IDENTITY_SEND,
        QUEUE_PARTNER_ROLE,
        "allowed",
        ["identity:IdentitySend", "resource:PartnerRole"],
        "allowed",
        "allowed",
        False,
        id="cross-named-role",
    ),
    pytest.param(
        OTHER_SESSION,
        IDENTITY_NOTHING,
        QUEUE_PARTNER_ROLE,
        "implicit_deny",
        [],
        "implicit_deny",
        "allowed",
        False,
        id="cross-queue-alone",
    ),
    pytest.param(
        OTHER_SESSION,
        IDENTITY_SEND,
        None,
        "implicit_deny",
        [],
        "allowed",
        "implicit_deny",
        False,
        id="cross-identity-alone",
    ),
    pytest.param(
        OTHER_SESSION,
        IDENTITY_SEND,
        QUEUE_DENY,
        "explicit_deny",
        ["resource:DenyAll"],
        "allowed",
        "explicit_deny",
        False,
        id="cross-deny",
    ),
]


@pytest.mark.parametrize(
    (
        "principal",
        "identity",
        "queue",
        "decision",
        "statements",
        "id_verdict",
        "queue_verdict",
        "same",
    ),
    TWO_POLICY_CASES,
)
def test_explain_on_two_policies(
    runner: CliRunner,
    principal: str,
    identity: dict[str, Any] | None,
    queue: dict[str, Any] | None,
    decision: str,
    statements: list[str],
    id_verdict: str,
    queue_verdict: str,
    same: bool,
) -> None:
    result = both(runner, identity, queue, principal)

    assert result.exit_code == (0 if decision == "allowed" else 3), result.stderr
    assert json.loads(result.stdout) == {
        "decision": decision,
        "statements": statements,
        "missing_context": [],
        "identity": id_verdict,
        "resource_policy": queue_verdict,
        "same_account": same,
    }


def test_explain_on_two_policies_indeterminate_and_strict(runner: CliRunner) -> None:
    fenced = document(
        allow(
            "ViaEndpoint", {"AWS": ROLE}, Condition={"StringEquals": {"aws:SourceVpce": "vpce-1"}}
        )
    )

    lenient = both(runner, IDENTITY_NOTHING, fenced, SESSION)
    strict = both(runner, IDENTITY_NOTHING, fenced, SESSION, "--strict")
    given = both(runner, IDENTITY_NOTHING, fenced, SESSION, "--context", "aws:SourceVpce=vpce-1")

    assert lenient.exit_code == 0 and strict.exit_code == 3
    found = json.loads(lenient.stdout)
    assert (found["decision"], found["missing_context"]) == ("indeterminate", ["aws:SourceVpce"])
    assert found["statements"] == ["resource:ViaEndpoint"]
    assert (given.exit_code, json.loads(given.stdout)["decision"]) == (0, "allowed")


def test_explain_needs_one_kind_of_policy_option(runner: CliRunner) -> None:
    write("p.json", QUEUE_ROLE)
    base = ["access", "explain", "--principal", ROLE, "--action", "sqs:SendMessage"]

    neither = runner.invoke(main, base)
    mixed = runner.invoke(main, [*base, "--policy", "p.json", "--resource-policy", "p.json"])

    for result in (neither, mixed):
        assert result.exit_code == 2
        assert "give --policy FILE, or --identity-policy and/or --resource-policy" in result.stderr


def test_explain_identity_policy_with_principals_is_refused(runner: CliRunner) -> None:
    result = both(runner, QUEUE_ROLE, None, SESSION)

    assert result.exit_code == 2
    assert "identity.json" in result.stderr and "has no Principal elements" in result.stderr


def explain_one(runner: CliRunner, *args: str, policy: dict[str, Any] = QUEUE_ROLE) -> Result:
    write("policy.json", policy)
    return runner.invoke(
        main, ["access", "explain", "--policy", "policy.json", *args, "--format", "json"]
    )


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("sqs:SendMesage", "unknown SQS action 'sqs:SendMesage': did you mean sqs:SendMessage?"),
        (
            "SendMessage",
            "action 'SendMessage' has no service prefix: did you mean sqs:SendMessage?",
        ),
        ("sqs:recievemessage", "did you mean sqs:ReceiveMessage?"),
    ],
)
def test_explain_unknown_action_is_a_usage_error_with_a_suggestion(
    runner: CliRunner, action: str, message: str
) -> None:
    result = explain_one(runner, "--principal", ROLE, "--action", action, "--resource", QUEUE)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "RAAS_USAGE" in result.stderr and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("principal", ["bob", "arn:aws:iam::1234:user/bob", "arn:aws:s3:::bucket"])
def test_explain_malformed_principal_is_a_usage_error(runner: CliRunner, principal: str) -> None:
    result = explain_one(runner, "--principal", principal, "--action", "sqs:SendMessage")

    assert result.exit_code == 2
    assert f"{principal!r} is not a principal" in result.stderr
    assert "arn:aws:iam::111122223333:role/name" in result.stderr


def test_explain_takes_principal_context_from_the_principal(runner: CliRunner) -> None:
    by_arn = document(
        allow(
            "Roles",
            "*",
            Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/raas-*"}},
        )
    )
    by_name = document(
        allow("OwnQueue", "*", Resource=f"arn:aws:sqs:us-east-1:{ACCOUNT}:${{aws:username}}-jobs")
    )
    alice_queue = f"arn:aws:sqs:us-east-1:{ACCOUNT}:alice-jobs"

    role = explain_one(
        runner,
        "--principal",
        ROLE,
        "--action",
        "sqs:SendMessage",
        "--resource",
        QUEUE,
        policy=by_arn,
    )
    overridden = explain_one(
        runner,
        "--principal",
        ROLE,
        "--action",
        "sqs:SendMessage",
        "--resource",
        QUEUE,
        "--context",
        f"aws:principalarn=arn:aws:iam::{ACCOUNT}:role/other",
        policy=by_arn,
    )
    user = explain_one(
        runner,
        "--principal",
        f"arn:aws:iam::{ACCOUNT}:user/alice",
        "--action",
        "sqs:SendMessage",
        "--resource",
        alice_queue,
        policy=by_name,
    )
    session = explain_one(
        runner,
        "--principal",
        SESSION,
        "--action",
        "sqs:SendMessage",
        "--resource",
        QUEUE,
        policy=by_arn,
    )

    assert json.loads(role.stdout) == {
        "decision": "allowed",
        "statements": ["Roles"],
        "missing_context": [],
    }
    assert json.loads(overridden.stdout)["decision"] == "implicit_deny"
    assert json.loads(user.stdout)["decision"] == "allowed"
    # A session's role ARN carries a path the session ARN does not show: still unknown.
    assert json.loads(session.stdout)["missing_context"] == ["aws:PrincipalArn"]


def test_explain_without_resource_is_indeterminate_with_the_reason(runner: CliRunner) -> None:
    result = explain_one(runner, "--principal", ROLE, "--action", "sqs:SendMessage")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "decision": "indeterminate",
        "statements": ["WorkerRole"],
        "missing_context": [],
        "warnings": [f"statement WorkerRole applies only to {QUEUE}: the resource is not given"],
    }


def test_explain_warns_about_wildcard_principal_arns(runner: CliRunner) -> None:
    wildcard = document(allow("Roles", {"AWS": f"arn:aws:iam::{ACCOUNT}:role/raas-*"}))

    result = explain_one(
        runner,
        "--principal",
        ROLE,
        "--action",
        "sqs:SendMessage",
        "--resource",
        QUEUE,
        policy=wildcard,
    )

    assert result.exit_code == 3
    found = json.loads(result.stdout)
    assert found["decision"] == "implicit_deny"
    assert "AWS does not support in principal ARNs" in found["warnings"][0]


def test_explain_federated_session_with_its_issuer(runner: CliRunner) -> None:
    alice = f"arn:aws:iam::{ACCOUNT}:user/alice"
    named = document(allow("Alice", {"AWS": alice}))
    federated = f"arn:aws:sts::{ACCOUNT}:federated-user/alice-laptop"
    args = ("--principal", federated, "--action", "sqs:SendMessage", "--resource", QUEUE)

    unknown = explain_one(runner, *args, policy=named)
    known = explain_one(runner, *args, "--context", f"raasctl:SessionIssuer={alice}", policy=named)

    assert json.loads(unknown.stdout)["missing_context"] == ["raasctl:SessionIssuer"]
    assert json.loads(known.stdout)["decision"] == "allowed"
