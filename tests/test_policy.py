"""Tests for raasctl.policy: the offline IAM policy evaluator behind `access explain/check`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raasctl.policy import (
    AccessDecision,
    ContextValue,
    Decision,
    PolicyError,
    Request,
    account_of,
    evaluate,
    evaluate_access,
    load_policy,
    normalize_action,
    parse_policy,
)

ACCT = "111122223333"
OTHER = "444455556666"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCT}:raas-cron-jobs-work-uat.fifo"
OTHER_QUEUE = f"arn:aws:sqs:us-east-1:{ACCT}:billing-events"
ROLE = f"arn:aws:iam::{ACCT}:role/service/raas-worker"
SESSION = f"arn:aws:sts::{ACCT}:assumed-role/raas-worker/i-0abc123"
USER = f"arn:aws:iam::{ACCT}:user/alice"
OTHER_ROLE = f"arn:aws:iam::{OTHER}:role/raas-worker"
OTHER_SESSION = f"arn:aws:sts::{OTHER}:assumed-role/raas-worker/ci-run-7"
SNS_TOPIC = f"arn:aws:sns:us-east-1:{ACCT}:raas-events"

# What `sqs add-permission --label lbl --aws-account-ids 444455556666 --actions SendMessage`
# writes: note the upper-case "SQS:" prefix and the ":root" principal.
DEFAULT_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Id": "arn:aws:sqs:us-east-1:111122223333:q/SQSDefaultPolicy",
    "Statement": [
        {
            "Sid": "lbl",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
            "Action": "SQS:SendMessage",
            "Resource": "arn:aws:sqs:us-east-1:111122223333:q",
        }
    ],
}
DEFAULT_QUEUE = "arn:aws:sqs:us-east-1:111122223333:q"


def stmt(
    sid: str | None = None,
    effect: str = "Allow",
    principal: Any = "*",
    action: Any = "sqs:SendMessage",
    resource: Any = QUEUE,
    condition: dict[str, Any] | None = None,
    **other: Any,
) -> dict[str, Any]:
    """A statement; pass NotAction= etc. in `other` and None to drop the plain field."""
    out: dict[str, Any] = {"Effect": effect}
    if sid is not None:
        out["Sid"] = sid
    for key, value in (("Principal", principal), ("Action", action), ("Resource", resource)):
        if value is not None:
            out[key] = value
    if condition is not None:
        out["Condition"] = condition
    out.update(other)
    return out


def pol(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def req(
    principal: str = SESSION,
    action: str = "sqs:SendMessage",
    resource: str | None = QUEUE,
    **context: Any,
) -> Request:
    """A request; context keys are given with `__` for `:` (aws__SourceAccount)."""
    keys = {k.replace("__", ":"): v for k, v in context.items()}
    return Request(principal, action, resource, keys)


def cond(condition: dict[str, Any], effect: str = "Allow", sid: str = "C") -> dict[str, Any]:
    return pol(stmt(sid, effect, condition=condition))


ALLOW_ALL_DENY_PURGE = pol(
    stmt("AllowAll", action="sqs:*"),
    stmt("DenyPurge", "Deny", action=["sqs:PurgeQueue", "sqs:DeleteQueue"]),
)
NOT_PRINCIPAL = pol(
    stmt("AllowAccount", principal={"AWS": ACCT}, action="sqs:*"),
    stmt(
        "DenyAllButWorker",
        "Deny",
        principal=None,
        action="sqs:*",
        NotPrincipal={"AWS": [ROLE, f"arn:aws:iam::{ACCT}:root"]},
    ),
)
NOT_RESOURCE = pol(
    stmt("AllowAll", action="sqs:*", resource="*"),
    stmt("DenyOtherQueues", "Deny", action="sqs:*", resource=None, NotResource=QUEUE),
)
SOURCE_ACCOUNT = {"StringEquals": {"aws:SourceAccount": ACCT}}
INSECURE = {"Bool": {"aws:SecureTransport": "false"}}

# id, policy, request, decision, statements, missing_context
CASES: list[Any] = [
    # ---- the default policy SQS AddPermission writes
    pytest.param(
        DEFAULT_POLICY,
        req(OTHER_ROLE, resource=DEFAULT_QUEUE),
        "allowed",
        ["lbl"],
        [],
        id="default-policy-other-account-role",
    ),
    pytest.param(
        DEFAULT_POLICY,
        req(OTHER_SESSION, "sqs:sendmessage", DEFAULT_QUEUE),
        "allowed",
        ["lbl"],
        [],
        id="default-policy-session-lowercase-action",
    ),
    pytest.param(
        DEFAULT_POLICY,
        req(OTHER, "sqs:SendMessageBatch", DEFAULT_QUEUE),
        "allowed",
        ["lbl"],
        [],
        id="default-policy-bare-account-batch",
    ),
    pytest.param(
        DEFAULT_POLICY,
        req(OTHER_ROLE, "sqs:ReceiveMessage", DEFAULT_QUEUE),
        "implicit_deny",
        [],
        [],
        id="default-policy-other-action",
    ),
    pytest.param(
        DEFAULT_POLICY,
        req(SESSION, resource=DEFAULT_QUEUE),
        "implicit_deny",
        [],
        [],
        id="default-policy-owner-account-not-named",
    ),
    pytest.param(
        DEFAULT_POLICY,
        req(OTHER_ROLE, resource=QUEUE),
        "implicit_deny",
        [],
        [],
        id="default-policy-other-queue",
    ),
    # ---- principals
    pytest.param(
        pol(stmt("A", principal={"AWS": ACCT})),
        req(USER),
        "allowed",
        ["A"],
        [],
        id="bare-account-matches-user",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": f"arn:aws:iam::{ACCT}:root"})),
        req(SESSION),
        "allowed",
        ["A"],
        [],
        id="root-matches-assumed-role-session",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": f"arn:aws:iam::{ACCT}:root"})),
        req(ROLE),
        "allowed",
        ["A"],
        [],
        id="root-matches-role",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": ACCT})),
        req(OTHER_SESSION),
        "implicit_deny",
        [],
        [],
        id="account-does-not-match-other-account",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": ROLE})),
        req(SESSION),
        "allowed",
        ["A"],
        [],
        id="role-with-path-matches-its-session",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": ROLE})),
        req(f"arn:aws:sts::{ACCT}:assumed-role/raas-admin/x"),
        "implicit_deny",
        [],
        [],
        id="role-does-not-match-other-role-session",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": ROLE})),
        req(OTHER_SESSION),
        "implicit_deny",
        [],
        [],
        id="role-does-not-match-same-name-other-account",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": ROLE})),
        req(USER),
        "implicit_deny",
        [],
        [],
        id="role-does-not-match-user",
    ),
    # Wildcards inside principal ARNs match no principal (AWS does not support them): see
    # tests/test_policy_rules.py, which also checks the warning explain gives for them.
    pytest.param(
        pol(stmt("A", principal="*")), req(OTHER_SESSION), "allowed", ["A"], [], id="star-principal"
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": "*"})),
        req(USER),
        "allowed",
        ["A"],
        [],
        id="aws-star-principal",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": [OTHER_ROLE, USER]})),
        req(USER),
        "allowed",
        ["A"],
        [],
        id="principal-list",
    ),
    pytest.param(
        pol(stmt("A", principal={"Service": "sns.amazonaws.com"})),
        req("sns.amazonaws.com"),
        "allowed",
        ["A"],
        [],
        id="service-principal",
    ),
    pytest.param(
        pol(stmt("A", principal={"Service": "sns.amazonaws.com"})),
        req("events.amazonaws.com"),
        "implicit_deny",
        [],
        [],
        id="other-service-principal",
    ),
    pytest.param(
        pol(stmt("A", principal={"AWS": ACCT})),
        req("sns.amazonaws.com"),
        "implicit_deny",
        [],
        [],
        id="service-is-not-an-account-principal",
    ),
    # ---- deny, NotAction, NotResource, NotPrincipal, statement names
    pytest.param(
        ALLOW_ALL_DENY_PURGE,
        req(action="sqs:PurgeQueue"),
        "explicit_deny",
        ["DenyPurge"],
        [],
        id="deny-beats-allow",
    ),
    pytest.param(
        ALLOW_ALL_DENY_PURGE,
        req(action="sqs:SendMessage"),
        "allowed",
        ["AllowAll"],
        [],
        id="allow-where-deny-does-not-apply",
    ),
    pytest.param(
        pol(stmt("NA", action=None, NotAction="sqs:DeleteQueue")),
        req(),
        "allowed",
        ["NA"],
        [],
        id="notaction-other-action",
    ),
    pytest.param(
        pol(stmt("NA", action=None, NotAction="sqs:Delete*")),
        req(action="sqs:DeleteQueue"),
        "implicit_deny",
        [],
        [],
        id="notaction-excluded-action",
    ),
    pytest.param(
        NOT_RESOURCE,
        req(resource=OTHER_QUEUE),
        "explicit_deny",
        ["DenyOtherQueues"],
        [],
        id="notresource-denies-other-queue",
    ),
    pytest.param(
        NOT_RESOURCE,
        req(resource=QUEUE),
        "allowed",
        ["AllowAll"],
        [],
        id="notresource-spares-named-queue",
    ),
    pytest.param(
        NOT_PRINCIPAL,
        req(SESSION, "sqs:ReceiveMessage"),
        "allowed",
        ["AllowAccount"],
        [],
        id="notprincipal-exempts-role-session",
    ),
    pytest.param(
        NOT_PRINCIPAL,
        req(USER, "sqs:ReceiveMessage"),
        "explicit_deny",
        ["DenyAllButWorker"],
        [],
        id="notprincipal-denies-others",
    ),
    pytest.param(
        pol(stmt("D", "Deny", principal=None, NotPrincipal={"AWS": ACCT})),
        req(ROLE),
        "explicit_deny",
        ["D"],
        [],
        id="notprincipal-account-does-not-exempt-its-roles",
    ),
    pytest.param(
        pol(stmt("D", "Deny", principal=None, NotPrincipal={"AWS": ACCT})),
        req(ACCT),
        "implicit_deny",
        [],
        [],
        id="notprincipal-account-exempts-the-account",
    ),
    pytest.param(
        pol(stmt(None, action="sqs:Get*"), stmt(None), stmt("S", action="sqs:*")),
        req(),
        "allowed",
        ["#2", "S"],
        [],
        id="unnamed-statements-by-index",
    ),
    pytest.param(
        {"Statement": stmt("One")}, req(), "allowed", ["One"], [], id="statement-as-single-object"
    ),
    # ---- action and resource wildcards, batch actions
    pytest.param(
        pol(stmt("W", action="sqs:*")),
        req(action="sqs:PurgeQueue"),
        "allowed",
        ["W"],
        [],
        id="action-sqs-star",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:Send*")),
        req(action="sqs:SendMessage"),
        "allowed",
        ["W"],
        [],
        id="action-send-star",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:Send*")),
        req(action="sqs:ReceiveMessage"),
        "implicit_deny",
        [],
        [],
        id="action-send-star-no-receive",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:?eceiveMessage")),
        req(action="SQS:RECEIVEMESSAGE"),
        "allowed",
        ["W"],
        [],
        id="action-question-mark",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:?eceiveMessage")),
        req(action="sqs:eceiveMessage"),
        "implicit_deny",
        [],
        [],
        id="action-question-mark-needs-one-char",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:DeleteMessage")),
        req(action="sqs:DeleteMessageBatch"),
        "allowed",
        ["W"],
        [],
        id="batch-delete-needs-delete",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:ChangeMessageVisibility")),
        req(action="sqs:ChangeMessageVisibilityBatch"),
        "allowed",
        ["W"],
        [],
        id="batch-visibility-needs-visibility",
    ),
    pytest.param(
        pol(stmt("W", action="sqs:SendMessageBatch")),
        req(action="sqs:SendMessageBatch"),
        "implicit_deny",
        [],
        [],
        id="batch-action-in-policy-grants-nothing",
    ),
    pytest.param(
        pol(stmt("W", "Deny", action="sqs:SendMessage")),
        req(action="sqs:SendMessageBatch"),
        "explicit_deny",
        ["W"],
        [],
        id="batch-action-denied-by-single",
    ),
    pytest.param(
        pol(stmt("R", resource=f"arn:aws:sqs:*:{ACCT}:raas-*")),
        req(resource=f"arn:aws:sqs:us-west-2:{ACCT}:raas-cron-jobs-prod.fifo"),
        "allowed",
        ["R"],
        [],
        id="resource-wildcards",
    ),
    pytest.param(
        pol(stmt("R", resource=f"arn:aws:sqs:*:{ACCT}:raas-*")),
        req(resource=f"arn:aws:sqs:us-east-1:{OTHER}:raas-cron-jobs"),
        "implicit_deny",
        [],
        [],
        id="resource-wildcard-other-account",
    ),
    pytest.param(
        pol(stmt("R", resource=f"arn:aws:sqs:*:{ACCT}:raas-*")),
        req(resource=f"arn:aws:sqs:us-east-1:{ACCT}:RAAS-upper"),
        "implicit_deny",
        [],
        [],
        id="resource-is-case-sensitive",
    ),
    pytest.param(
        pol(stmt("R", resource=["*"])),
        req(resource=None),
        "allowed",
        ["R"],
        [],
        id="no-resource-matches-star",
    ),
    pytest.param(
        pol(stmt("R")),
        req(resource=None),
        "implicit_deny",
        [],
        [],
        id="no-resource-misses-specific-arn",
    ),
    pytest.param(
        pol(stmt("R", resource=None, NotResource=OTHER_QUEUE)),
        req(resource=None),
        "implicit_deny",
        [],
        [],
        id="no-resource-never-matches-notresource",
    ),
    # ---- string conditions
    pytest.param(
        cond(SOURCE_ACCOUNT),
        req(aws__SourceAccount=ACCT),
        "allowed",
        ["C"],
        [],
        id="stringequals-met",
    ),
    pytest.param(
        cond(SOURCE_ACCOUNT),
        req(aws__SourceAccount=OTHER),
        "implicit_deny",
        [],
        [],
        id="stringequals-not-met",
    ),
    pytest.param(
        cond(SOURCE_ACCOUNT),
        req(),
        "indeterminate",
        ["C"],
        ["aws:SourceAccount"],
        id="stringequals-unknown",
    ),
    pytest.param(
        cond(SOURCE_ACCOUNT),
        req(AWS__SOURCEACCOUNT=ACCT),
        "allowed",
        ["C"],
        [],
        id="condition-keys-case-insensitive",
    ),
    pytest.param(
        cond({"stringequals": {"aws:SourceAccount": [OTHER, ACCT]}}),
        req(aws__SourceAccount=ACCT),
        "allowed",
        ["C"],
        [],
        id="values-for-one-key-are-ored",
    ),
    pytest.param(
        cond({"StringNotEquals": {"aws:SourceAccount": [OTHER, ACCT]}}),
        req(aws__SourceAccount=ACCT),
        "implicit_deny",
        [],
        [],
        id="negated-values-are-nored",
    ),
    pytest.param(
        cond({"StringNotEquals": {"aws:SourceAccount": [OTHER, ACCT]}}),
        req(aws__SourceAccount="999988887777"),
        "allowed",
        ["C"],
        [],
        id="stringnotequals-met",
    ),
    pytest.param(
        cond({"StringEqualsIgnoreCase": {"aws:PrincipalTag/team": "Accounting"}}),
        req(**{"aws:PrincipalTag/team": "ACCOUNTING"}),
        "allowed",
        ["C"],
        [],
        id="stringequalsignorecase-met",
    ),
    pytest.param(
        cond({"StringNotEqualsIgnoreCase": {"aws:PrincipalTag/team": "Accounting"}}),
        req(**{"aws:PrincipalTag/team": "accounting"}),
        "implicit_deny",
        [],
        [],
        id="stringnotequalsignorecase-not-met",
    ),
    pytest.param(
        cond({"StringEquals": {"aws:PrincipalTag/team": "Accounting"}}),
        req(**{"aws:PrincipalTag/team": "accounting"}),
        "implicit_deny",
        [],
        [],
        id="stringequals-is-case-sensitive",
    ),
    pytest.param(
        cond({"StringLike": {"aws:userid": "AROA*:ci-?"}}),
        req(aws__userid="AROAEXAMPLE:ci-7"),
        "allowed",
        ["C"],
        [],
        id="stringlike-met",
    ),
    pytest.param(
        cond({"StringLike": {"aws:userid": "AROA*:ci-?"}}),
        req(aws__userid="AROAEXAMPLE:ci-77"),
        "implicit_deny",
        [],
        [],
        id="stringlike-not-met",
    ),
    pytest.param(
        cond({"StringNotLike": {"aws:userid": "AIDA*"}}),
        req(aws__userid="AROAEXAMPLE:ci-7"),
        "allowed",
        ["C"],
        [],
        id="stringnotlike-met",
    ),
    # ---- ARN conditions
    pytest.param(
        cond({"ArnEquals": {"aws:SourceArn": SNS_TOPIC}}),
        req(aws__SourceArn=SNS_TOPIC),
        "allowed",
        ["C"],
        [],
        id="arnequals-met",
    ),
    pytest.param(
        cond({"ArnLike": {"aws:SourceArn": f"arn:aws:sns:*:{ACCT}:raas-*"}}),
        req(aws__SourceArn=SNS_TOPIC),
        "allowed",
        ["C"],
        [],
        id="arnlike-met",
    ),
    pytest.param(
        cond({"ArnLike": {"aws:SourceArn": f"arn:aws:sns:*:{ACCT}:raas-*"}}),
        req(aws__SourceArn=f"arn:aws:sns:us-east-1:{OTHER}:raas-events"),
        "implicit_deny",
        [],
        [],
        id="arnlike-not-met",
    ),
    pytest.param(
        cond({"ArnLike": {"aws:SourceArn": "arn:aws:sns:*"}}),
        req(aws__SourceArn=SNS_TOPIC),
        "implicit_deny",
        [],
        [],
        id="arnlike-star-stays-in-its-field",
    ),
    pytest.param(
        cond({"ArnNotLike": {"aws:SourceArn": f"arn:aws:sns:*:{ACCT}:*"}}, "Deny", "D"),
        req(aws__SourceArn=f"arn:aws:sns:us-east-1:{OTHER}:x"),
        "explicit_deny",
        ["D"],
        [],
        id="arnnotlike-deny-met",
    ),
    pytest.param(
        cond({"ArnNotEquals": {"aws:SourceArn": SNS_TOPIC}}),
        req(aws__SourceArn=SNS_TOPIC),
        "implicit_deny",
        [],
        [],
        id="arnnotequals-not-met",
    ),
    # ---- numeric conditions
    pytest.param(
        cond({"NumericLessThanEquals": {"sqs:DelaySeconds": "10"}}),
        req(sqs__DelaySeconds="10"),
        "allowed",
        ["C"],
        [],
        id="numericlte-met",
    ),
    pytest.param(
        cond({"NumericLessThan": {"sqs:DelaySeconds": 10}}),
        req(sqs__DelaySeconds="10"),
        "implicit_deny",
        [],
        [],
        id="numericlt-not-met",
    ),
    pytest.param(
        cond({"NumericGreaterThan": {"sqs:DelaySeconds": "0"}}),
        req(sqs__DelaySeconds="0.5"),
        "allowed",
        ["C"],
        [],
        id="numericgt-met",
    ),
    pytest.param(
        cond({"NumericGreaterThanEquals": {"sqs:DelaySeconds": "5"}}),
        req(sqs__DelaySeconds="4"),
        "implicit_deny",
        [],
        [],
        id="numericgte-not-met",
    ),
    pytest.param(
        cond({"NumericEquals": {"sqs:DelaySeconds": "5"}}),
        req(sqs__DelaySeconds="5.0"),
        "allowed",
        ["C"],
        [],
        id="numericequals-met",
    ),
    pytest.param(
        cond({"NumericNotEquals": {"sqs:DelaySeconds": "5"}}),
        req(sqs__DelaySeconds="5"),
        "implicit_deny",
        [],
        [],
        id="numericnotequals",
    ),
    pytest.param(
        cond({"NumericEquals": {"sqs:DelaySeconds": "5"}}),
        req(sqs__DelaySeconds="five"),
        "implicit_deny",
        [],
        [],
        id="numeric-unparsable-context-does-not-match",
    ),
    pytest.param(
        cond({"NumericLessThan": {"sqs:DelaySeconds": "5"}}),
        req(),
        "indeterminate",
        ["C"],
        ["sqs:DelaySeconds"],
        id="numeric-unknown",
    ),
    # ---- date conditions
    pytest.param(
        cond({"DateLessThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}}),
        req(aws__CurrentTime="2026-11-29T02:00:00Z"),
        "allowed",
        ["C"],
        [],
        id="datelessthan-met",
    ),
    pytest.param(
        cond({"DateGreaterThan": {"aws:CurrentTime": "2027-01-01"}}),
        req(aws__CurrentTime="2026-11-29T02:00:00+00:00"),
        "implicit_deny",
        [],
        [],
        id="dategreaterthan-not-met",
    ),
    pytest.param(
        cond({"DateEquals": {"aws:EpochTime": "1767225600"}}),
        req(aws__EpochTime="2026-01-01T00:00:00Z"),
        "allowed",
        ["C"],
        [],
        id="dateequals-epoch-vs-iso",
    ),
    pytest.param(
        cond({"DateNotEquals": {"aws:CurrentTime": "2026-01-01T01:00:00+01:00"}}),
        req(aws__CurrentTime="2026-01-01T00:00:00Z"),
        "implicit_deny",
        [],
        [],
        id="datenotequals-offsets",
    ),
    pytest.param(
        cond(
            {
                "DateGreaterThanEquals": {"aws:TokenIssueTime": "2026-01-01"},
                "DateLessThanEquals": {"aws:TokenIssueTime": "2026-12-31"},
            }
        ),
        req(aws__TokenIssueTime="2026-06-30T12:00:00Z"),
        "allowed",
        ["C"],
        [],
        id="date-range-two-operators-anded",
    ),
    pytest.param(
        cond({"DateLessThan": {"aws:CurrentTime": "2027-01-01"}}),
        req(),
        "indeterminate",
        ["C"],
        ["aws:CurrentTime"],
        id="date-unknown",
    ),
    # ---- Bool, IpAddress
    pytest.param(
        cond({"Bool": {"aws:SecureTransport": "false"}}, "Deny", "DenyInsecure"),
        req(aws__SecureTransport="false"),
        "explicit_deny",
        ["DenyInsecure"],
        [],
        id="bool-deny-insecure-met",
    ),
    pytest.param(
        cond({"Bool": {"aws:SecureTransport": False}}, "Deny", "DenyInsecure"),
        req(aws__SecureTransport="TRUE"),
        "implicit_deny",
        [],
        [],
        id="bool-deny-insecure-not-met",
    ),
    pytest.param(
        cond({"Bool": {"aws:SecureTransport": "false"}}, "Deny", "DenyInsecure"),
        req(),
        "indeterminate",
        ["DenyInsecure"],
        ["aws:SecureTransport"],
        id="bool-unknown",
    ),
    pytest.param(
        cond({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.0.2.7"]}}),
        req(aws__SourceIp="10.20.30.40"),
        "allowed",
        ["C"],
        [],
        id="ipaddress-met",
    ),
    pytest.param(
        cond({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        req(aws__SourceIp="2001:db8::1"),
        "implicit_deny",
        [],
        [],
        id="ipaddress-other-version",
    ),
    pytest.param(
        cond({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, "Deny", "D"),
        req(aws__SourceIp="203.0.113.9"),
        "explicit_deny",
        ["D"],
        [],
        id="notipaddress-met",
    ),
    pytest.param(
        cond({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}),
        req(aws__SourceIp="2001:db8::1"),
        "allowed",
        ["C"],
        [],
        id="ipaddress-v6",
    ),
    # ---- Null and IfExists: unknown is never absent
    pytest.param(
        cond({"Null": {"aws:SourceArn": "false"}}),
        req(aws__SourceArn=SNS_TOPIC),
        "allowed",
        ["C"],
        [],
        id="null-false-key-present",
    ),
    pytest.param(
        cond({"Null": {"aws:SourceArn": "true"}}),
        req(aws__SourceArn=SNS_TOPIC),
        "implicit_deny",
        [],
        [],
        id="null-true-key-present",
    ),
    pytest.param(
        cond({"Null": {"aws:SourceArn": "true"}}),
        req(aws__SourceArn=None),
        "allowed",
        ["C"],
        [],
        id="null-true-key-known-absent",
    ),
    pytest.param(
        cond({"Null": {"aws:SourceArn": "true"}}),
        req(),
        "indeterminate",
        ["C"],
        ["aws:SourceArn"],
        id="null-unknown-key",
    ),
    pytest.param(
        cond({"StringEqualsIfExists": {"aws:SourceAccount": ACCT}}),
        req(),
        "indeterminate",
        ["C"],
        ["aws:SourceAccount"],
        id="ifexists-unknown-key",
    ),
    pytest.param(
        cond({"StringEqualsIfExists": {"aws:SourceAccount": ACCT}}),
        req(aws__SourceAccount=None),
        "allowed",
        ["C"],
        [],
        id="ifexists-known-absent",
    ),
    pytest.param(
        cond({"StringEqualsIfExists": {"aws:SourceAccount": ACCT}}),
        req(aws__SourceAccount=OTHER),
        "implicit_deny",
        [],
        [],
        id="ifexists-present-not-met",
    ),
    pytest.param(
        cond({"ArnLikeIfExists": {"aws:SourceArn": f"arn:aws:sns:*:{ACCT}:*"}}),
        req(aws__SourceArn=SNS_TOPIC),
        "allowed",
        ["C"],
        [],
        id="ifexists-present-met",
    ),
    pytest.param(
        cond({"NumericLessThanIfExists": {"sqs:DelaySeconds": "5"}}),
        req(sqs__DelaySeconds=None),
        "allowed",
        ["C"],
        [],
        id="numeric-ifexists-absent",
    ),
    pytest.param(
        cond(SOURCE_ACCOUNT),
        req(aws__SourceAccount=None),
        "implicit_deny",
        [],
        [],
        id="absent-key-positive-operator",
    ),
    pytest.param(
        cond({"StringNotEquals": {"aws:SourceAccount": ACCT}}),
        req(aws__SourceAccount=None),
        "allowed",
        ["C"],
        [],
        id="absent-key-negated-operator",
    ),
    # ---- set operators
    pytest.param(
        cond({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}}),
        req(aws__TagKeys=["owner", "team"]),
        "allowed",
        ["C"],
        [],
        id="foranyvalue-met",
    ),
    pytest.param(
        cond({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}}),
        req(aws__TagKeys=["owner"]),
        "implicit_deny",
        [],
        [],
        id="foranyvalue-not-met",
    ),
    pytest.param(
        cond({"ForAllValues:StringLike": {"aws:TagKeys": ["env", "team*"]}}),
        req(aws__TagKeys=["env", "team-lead"]),
        "allowed",
        ["C"],
        [],
        id="forallvalues-met",
    ),
    pytest.param(
        cond({"ForAllValues:StringLike": {"aws:TagKeys": ["env", "team*"]}}),
        req(aws__TagKeys=["env", "owner"]),
        "implicit_deny",
        [],
        [],
        id="forallvalues-not-met",
    ),
    pytest.param(
        cond({"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}}),
        req(aws__TagKeys=[]),
        "allowed",
        ["C"],
        [],
        id="forallvalues-empty-set",
    ),
    pytest.param(
        cond({"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}}),
        req(aws__TagKeys=None),
        "allowed",
        ["C"],
        [],
        id="forallvalues-absent",
    ),
    pytest.param(
        cond({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env"]}}),
        req(aws__TagKeys=None),
        "implicit_deny",
        [],
        [],
        id="foranyvalue-absent",
    ),
    pytest.param(
        cond({"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}}),
        req(),
        "indeterminate",
        ["C"],
        ["aws:TagKeys"],
        id="forallvalues-unknown",
    ),
    pytest.param(
        cond({"ForAnyValue:StringNotEquals": {"aws:TagKeys": ["env"]}}),
        req(aws__TagKeys=["env", "x"]),
        "allowed",
        ["C"],
        [],
        id="foranyvalue-negated-per-value",
    ),
    pytest.param(
        cond({"ForAllValues:StringNotEquals": {"aws:TagKeys": ["env"]}}),
        req(aws__TagKeys=["env", "x"]),
        "implicit_deny",
        [],
        [],
        id="forallvalues-negated-per-value",
    ),
    # ---- three-valued logic and the decision rules
    pytest.param(
        cond({**SOURCE_ACCOUNT, "Bool": {"aws:SecureTransport": "true"}}),
        req(aws__SecureTransport="false"),
        "implicit_deny",
        [],
        [],
        id="known-false-beats-unknown",
    ),
    pytest.param(
        cond({"StringEquals": {"aws:SourceAccount": ACCT, "aws:SourceArn": SNS_TOPIC}}),
        req(aws__SourceArn=SNS_TOPIC),
        "indeterminate",
        ["C"],
        ["aws:SourceAccount"],
        id="known-true-and-unknown",
    ),
    pytest.param(
        cond({"StringEquals": {"aws:SourceAccount": ACCT, "aws:SourceArn": SNS_TOPIC}}),
        req(),
        "indeterminate",
        ["C"],
        ["aws:SourceAccount", "aws:SourceArn"],
        id="several-unknown-keys-sorted",
    ),
    pytest.param(
        pol(stmt("Allow"), stmt("DenyMaybe", "Deny", condition=INSECURE)),
        req(),
        "indeterminate",
        ["DenyMaybe"],
        ["aws:SecureTransport"],
        id="maybe-deny-spoils-known-allow",
    ),
    pytest.param(
        pol(
            stmt("DenyMaybe", "Deny", condition=SOURCE_ACCOUNT),
            stmt("DenySure", "Deny", action="sqs:*"),
        ),
        req(),
        "explicit_deny",
        ["DenySure"],
        [],
        id="known-deny-wins-over-unknowns",
    ),
    pytest.param(
        pol(stmt("AllowMaybe", condition=SOURCE_ACCOUNT), stmt("AllowSure")),
        req(),
        "allowed",
        ["AllowSure"],
        [],
        id="known-allow-ignores-maybe-allow",
    ),
    pytest.param(
        pol(
            stmt("AllowMaybe", condition=SOURCE_ACCOUNT),
            stmt("DenyMaybe", "Deny", condition=INSECURE),
        ),
        req(),
        "indeterminate",
        ["AllowMaybe", "DenyMaybe"],
        ["aws:SecureTransport", "aws:SourceAccount"],
        id="maybe-allow-and-maybe-deny",
    ),
    pytest.param(
        pol(stmt("DenyMaybe", "Deny", condition=SOURCE_ACCOUNT)),
        req(),
        "indeterminate",
        ["DenyMaybe"],
        ["aws:SourceAccount"],
        id="maybe-deny-alone-is-indeterminate",
    ),
    pytest.param(
        pol(stmt("AllowMaybe", action="sqs:ReceiveMessage", condition=SOURCE_ACCOUNT)),
        req(),
        "implicit_deny",
        [],
        [],
        id="unknown-key-irrelevant-when-action-misses",
    ),
    pytest.param(pol(), req(), "implicit_deny", [], [], id="empty-policy"),
]


@pytest.mark.parametrize(("policy", "request_", "decision", "statements", "missing"), CASES)
def test_evaluate(
    policy: dict[str, Any],
    request_: Request,
    decision: str,
    statements: list[str],
    missing: list[str],
) -> None:
    result = evaluate(policy, request_)
    assert result.to_json() == {
        "decision": decision,
        "statements": statements,
        "missing_context": missing,
    }


# ---- policy variables

USER_QUEUE = f"arn:aws:sqs:us-east-1:{ACCT}:${{aws:username}}-queue"
ALICE_QUEUE = f"arn:aws:sqs:us-east-1:{ACCT}:alice-queue"
# The reviewer's case: a blanket Allow and a Deny when the principal's and the resource's tags
# agree; compared as literal text the Deny never applied and the answer was a confident allow.
BLOCKED_TAGS = pol(
    stmt("AllowAll", action="sqs:*", resource="*"),
    stmt(
        "DenyBlocked",
        "Deny",
        action="sqs:*",
        resource="*",
        condition={"StringEquals": {"aws:PrincipalTag/blocked": "${aws:ResourceTag/blocked}"}},
    ),
)
PRINCIPAL_TAG = "aws__PrincipalTag/blocked"
RESOURCE_TAG = "aws__ResourceTag/blocked"


def tags(principal: str | None, resource: str | type[KeyError] | None) -> Request:
    """A request with the blocked tags; KeyError leaves the resource tag unknown."""
    context: dict[str, Any] = {PRINCIPAL_TAG: principal}
    if resource is not KeyError:
        context[RESOURCE_TAG] = resource
    return req(**context)


@pytest.mark.parametrize(
    ("request_", "decision", "statements", "missing"),
    [
        (tags("yes", "yes"), "explicit_deny", ["DenyBlocked"], []),
        (tags("yes", "no"), "allowed", ["AllowAll"], []),
        (tags("yes", KeyError), "indeterminate", ["DenyBlocked"], ["aws:ResourceTag/blocked"]),
        # A variable without a value equals nothing: the Deny does not apply.
        (tags("yes", None), "allowed", ["AllowAll"], []),
        # The condition key itself absent: StringEquals fails whatever the variable holds.
        (tags(None, KeyError), "allowed", ["AllowAll"], []),
    ],
    ids=[
        "tags-agree",
        "tags-differ",
        "resource-tag-unknown",
        "resource-tag-absent",
        "principal-tag-absent",
    ],
)
def test_variable_in_condition_value(
    request_: Request, decision: str, statements: list[str], missing: list[str]
) -> None:
    assert evaluate(BLOCKED_TAGS, request_).to_json() == {
        "decision": decision,
        "statements": statements,
        "missing_context": missing,
    }


def test_condition_key_and_its_variables_are_both_missing() -> None:
    result = evaluate(BLOCKED_TAGS, req())
    assert result.decision == "indeterminate"
    assert result.missing_context == ["aws:PrincipalTag/blocked", "aws:ResourceTag/blocked"]


@pytest.mark.parametrize(
    ("resource", "context", "decision", "missing"),
    [
        (ALICE_QUEUE, {"aws__username": "alice"}, "allowed", []),
        (ALICE_QUEUE, {"aws__username": "bob"}, "implicit_deny", []),
        (ALICE_QUEUE, {}, "indeterminate", ["aws:username"]),
        # Known absent (a role session has no aws:username): the entry matches no resource.
        (ALICE_QUEUE, {"aws__username": None}, "implicit_deny", []),
        # An expanded value is literal text, never a wildcard.
        (ALICE_QUEUE, {"aws__username": "*"}, "implicit_deny", []),
        (f"arn:aws:sqs:us-east-1:{ACCT}:*-queue", {"aws__username": "*"}, "allowed", []),
    ],
    ids=[
        "matches",
        "other-user",
        "unknown",
        "absent",
        "value-star-is-literal",
        "value-star-matches-itself",
    ],
)
def test_variable_in_resource(
    resource: str, context: dict[str, Any], decision: str, missing: list[str]
) -> None:
    policy = pol(stmt("OwnQueue", resource=USER_QUEUE))
    result = evaluate(policy, req(resource=resource, **context))
    assert (result.decision, result.missing_context) == (decision, missing)


def test_unknown_variable_is_irrelevant_when_another_entry_or_condition_decides() -> None:
    either = pol(stmt("Either", resource=[USER_QUEUE, ALICE_QUEUE]))
    assert evaluate(either, req(resource=ALICE_QUEUE)).decision == "allowed"
    fenced = pol(stmt("Fenced", resource=USER_QUEUE, condition=INSECURE))
    secure = req(resource=ALICE_QUEUE, aws__SecureTransport="true")
    assert evaluate(fenced, secure).to_json()["missing_context"] == []
    assert evaluate(fenced, secure).decision == "implicit_deny"
    values = cond({"StringEquals": {"aws:SourceAccount": ["${aws:PrincipalAccount}", ACCT]}})
    assert evaluate(values, req(aws__SourceAccount=ACCT)).decision == "allowed"
    assert evaluate(values, req(aws__SourceAccount=OTHER)).missing_context == [
        "aws:PrincipalAccount"
    ]


def test_variable_default_is_used_only_when_the_key_is_known_absent() -> None:
    policy = pol(
        stmt(
            "Team",
            resource=f"arn:aws:sqs:us-east-1:{ACCT}:${{ aws:PrincipalTag/team , 'shared' }}-jobs",
        )
    )
    shared = f"arn:aws:sqs:us-east-1:{ACCT}:shared-jobs"
    untagged = Request(SESSION, "sqs:SendMessage", shared, {"aws:PrincipalTag/team": None})
    tagged = Request(SESSION, "sqs:SendMessage", shared, {"aws:PrincipalTag/team": "billing"})
    assert evaluate(policy, untagged).decision == "allowed"
    assert evaluate(policy, tagged).decision == "implicit_deny"
    # Unknown is not absent: the principal may carry a team tag.
    assert evaluate(policy, req(resource=shared)).missing_context == ["aws:PrincipalTag/team"]


BILLING: dict[str, ContextValue] = {"aws:ResourceTag/team": "billing"}


def test_negated_operator_holds_for_a_variable_without_value() -> None:
    # IAM's own example: deny unless the object's team is the principal's, also when the
    # principal has no team tag.
    policy = pol(
        stmt("AllowAll", action="sqs:*", resource="*"),
        stmt(
            "DenyOtherTeams",
            "Deny",
            action="sqs:*",
            resource="*",
            condition={"StringNotEquals": {"aws:ResourceTag/team": "${aws:PrincipalTag/team}"}},
        ),
    )
    untagged = Request(
        SESSION, "sqs:SendMessage", QUEUE, {**BILLING, "aws:PrincipalTag/team": None}
    )
    same = Request(
        SESSION, "sqs:SendMessage", QUEUE, {**BILLING, "aws:PrincipalTag/team": "billing"}
    )
    assert evaluate(policy, untagged).decision == "explicit_deny"
    assert evaluate(policy, same).decision == "allowed"


def test_absent_variable_in_not_resource_matches_no_resource() -> None:
    policy = pol(stmt("DenyButOwn", "Deny", action="sqs:*", resource=None, NotResource=USER_QUEUE))
    assert evaluate(policy, req(resource=ALICE_QUEUE, aws__username=None)).decision == (
        "explicit_deny"
    )
    assert evaluate(policy, req(resource=ALICE_QUEUE, aws__username="alice")).decision == (
        "implicit_deny"
    )


@pytest.mark.parametrize(
    ("condition", "value", "holds"),
    [
        ({"StringLike": {"aws:userid": "AIDA${*}"}}, "AIDA*", True),
        ({"StringLike": {"aws:userid": "AIDA${*}"}}, "AIDAX", False),
        ({"StringLike": {"aws:userid": "AIDA${?}"}}, "AIDAX", False),
        ({"StringLike": {"aws:userid": "AIDA?"}}, "AIDAX", True),
        ({"StringEquals": {"aws:userid": "${$}{aws:username}"}}, "${aws:username}", True),
        ({"StringEqualsIgnoreCase": {"aws:userid": "${aws:username}"}}, "ALICE", True),
        ({"StringLike": {"aws:userid": "${AWS:UserName}:*"}}, "alice:session", True),
        ({"StringNotLike": {"aws:userid": "${aws:username}*"}}, "alice-2", False),
        ({"ArnEquals": {"aws:userid": "${aws:PrincipalArn}"}}, ROLE, True),
        ({"ArnLike": {"aws:userid": "arn:aws:iam::${aws:PrincipalAccount}:role/*"}}, ROLE, True),
        (
            {"ArnLike": {"aws:userid": "arn:aws:iam::${aws:PrincipalAccount}:role/*"}},
            OTHER_ROLE,
            False,
        ),
    ],
)
def test_variables_in_string_and_arn_operators(
    condition: dict[str, Any], value: str, holds: bool
) -> None:
    context = {
        "aws__userid": value,
        "aws__username": "alice",
        "aws__PrincipalArn": ROLE,
        "aws__PrincipalAccount": ACCT,
    }
    result = evaluate(cond(condition), req(**context))
    assert result.decision == ("allowed" if holds else "implicit_deny")


def test_variables_are_text_outside_2012_10_17_and_outside_resource_and_conditions() -> None:
    literal_queue = f"arn:aws:sqs:us-east-1:{ACCT}:${{aws:username}}-queue"
    for version in (None, "2008-10-17"):
        policy: dict[str, Any] = {"Statement": [stmt("Old", resource=USER_QUEUE)]}
        if version:
            policy["Version"] = version
        assert evaluate(policy, req(resource=ALICE_QUEUE, aws__username="alice")).decision == (
            "implicit_deny"
        )
        assert evaluate(policy, req(resource=literal_queue)).decision == "allowed"
    # No expansion in Principal: compared as written, so decided without aws:PrincipalArn.
    named = pol(stmt("P", principal={"AWS": "${aws:PrincipalArn}"}))
    assert evaluate(named, req(ROLE)).to_json()["decision"] == "implicit_deny"


def test_multi_valued_key_cannot_fill_a_variable() -> None:
    policy = cond({"StringEquals": {"aws:SourceAccount": "${aws:TagKeys}"}})
    result = evaluate(policy, req(aws__SourceAccount="env", aws__TagKeys=["env", "team"]))
    assert (result.decision, result.missing_context) == ("indeterminate", ["aws:TagKeys"])


# ---- identity policies


IDENTITY = pol(
    stmt("WorkerQueue", principal=None, action=["sqs:SendMessage", "sqs:ReceiveMessage"]),
    stmt("NoPurge", "Deny", principal=None, action="sqs:PurgeQueue", resource="*"),
)


@pytest.mark.parametrize(
    ("action", "decision", "statements"),
    [
        ("sqs:SendMessageBatch", "allowed", ["WorkerQueue"]),
        ("sqs:PurgeQueue", "explicit_deny", ["NoPurge"]),
        ("sqs:DeleteMessage", "implicit_deny", []),
    ],
)
def test_identity_policy_skips_principal(action: str, decision: str, statements: list[str]) -> None:
    result = evaluate(IDENTITY, req(OTHER_SESSION, action), identity=True)
    assert (result.decision, result.statements) == (decision, statements)


def test_label_prefixes_statement_names() -> None:
    result = evaluate(DEFAULT_POLICY, req(OTHER, resource=DEFAULT_QUEUE), label="resource")
    assert result.statements == ["resource:lbl"]


# ---- errors


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            cond({"StringEqualz": {"aws:SourceAccount": ACCT}}, sid="Typo"),
            "statement Typo: unknown condition operator 'StringEqualz'",
        ),
        (
            pol(stmt(None, condition={"NullIfExists": {"aws:SourceArn": "true"}})),
            "statement #1: unknown condition operator 'NullIfExists'",
        ),
        (cond({"NumericLessThan": {"sqs:DelaySeconds": "ten"}}, sid="N"), "statement N: invalid"),
        (cond({"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}, sid="N"), "statement N: invalid"),
        (cond({"DateLessThan": {"aws:CurrentTime": "soon"}}, sid="N"), "statement N: invalid"),
        (pol(stmt("NoPrincipal", principal=None)), "statement NoPrincipal has no Principal"),
        (pol(stmt("E", effect="allow")), "statement E: Effect must be Allow or Deny"),
        (
            pol(stmt("Both", NotAction="sqs:*")),
            "statement Both needs exactly one of Action, NotAction",
        ),
        (
            pol(stmt("NoRes", resource=None)),
            "statement NoRes needs exactly one of Resource, NotResource",
        ),
        ({"Version": "2012-10-17"}, "policy is not a policy document: it has no Statement"),
        (
            cond({"StringEquals": {"aws:SourceAccount": "${aws:username, none}"}}, sid="V"),
            "statement V: cannot read policy variable '${aws:username, none}'",
        ),
        (
            pol(stmt("V", resource="arn:aws:sqs:*:*:${}")),
            "statement V: cannot read policy variable '${}'",
        ),
        # Variables are not expanded in Numeric, Date, Bool, IpAddress or Null values.
        (
            cond({"NumericLessThan": {"sqs:DelaySeconds": "${aws:x}"}}, sid="N"),
            "statement N: invalid",
        ),
        (cond({"Bool": {"aws:SecureTransport": "${aws:x}"}}, sid="N"), "statement N: invalid"),
        (cond({"IpAddress": {"aws:SourceIp": "${aws:x}"}}, sid="N"), "statement N: invalid"),
    ],
)
def test_malformed_policy_raises(policy: dict[str, Any], message: str) -> None:
    # Errors do not depend on the context: the unknown key is not consulted first.
    with pytest.raises(PolicyError, match="^" + re.escape(message)) as info:
        evaluate(policy, req())
    assert "\n" not in str(info.value)


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


# ---- loading


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "queue-policy.json"
    path.write_text(json.dumps(DEFAULT_POLICY))
    assert load_policy(path) == DEFAULT_POLICY
    assert load_policy(str(path)) == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read policy file"),
        ("{not json", "is not valid JSON"),
        ('{"Version": "2012-10-17"}', "has no Statement"),
        ("[1, 2]", "has no Statement"),
        ('{"Statement": "x"}', "Statement must be an object or a list"),
    ],
)
def test_load_policy_errors_name_the_file(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


def test_parse_policy_names_its_source() -> None:
    with pytest.raises(PolicyError, match="queue raas Policy attribute is not valid JSON"):
        parse_policy("{", "queue raas Policy attribute")


# ---- helpers and the Decision type


def test_normalize_action_and_account_of() -> None:
    assert normalize_action("SQS:SendMessageBatch") == "sqs:sendmessage"
    assert normalize_action("sqs:ReceiveMessage") == "sqs:receivemessage"
    assert account_of(SESSION) == ACCT
    assert account_of(OTHER) == OTHER
    assert account_of(QUEUE) == ACCT
    assert account_of("sns.amazonaws.com") is None
    assert account_of(None) is None


def test_decision_json_and_outcomes() -> None:
    decided = Decision("allowed", ["A"])
    assert decided.to_json() == {"decision": "allowed", "statements": ["A"], "missing_context": []}
    assert decided.outcomes == {"allowed"}
    assert Decision("indeterminate").outcomes == {"allowed", "explicit_deny", "implicit_deny"}
    with pytest.raises(ValueError):
        Decision("maybe")
    maybe = evaluate(cond(SOURCE_ACCOUNT), req())
    assert maybe.outcomes == {"allowed", "implicit_deny"}


# ---- evaluate_access: the same-account / cross-account rule


WORKER_IDENTITY = pol(stmt("WorkerSend", principal=None, action="sqs:*"))
DENY_IDENTITY = pol(stmt("DenyAll", "Deny", principal=None, action="*", resource="*"))
EMPTY_IDENTITY = pol()
QUEUE_GRANTS_ACCOUNT = pol(stmt("lbl", principal={"AWS": ACCT}))
QUEUE_GRANTS_OTHER = pol(stmt("lbl", principal={"AWS": f"arn:aws:iam::{OTHER}:root"}))
QUEUE_NEEDS_SOURCE = pol(stmt("lbl", principal={"AWS": OTHER}, condition=SOURCE_ACCOUNT))
QUEUE_DENIES = pol(
    stmt("lbl", principal={"AWS": OTHER}), stmt("Block", "Deny", principal="*", action="sqs:*")
)

# principal, identity side, resource policy, decision, statements, missing, identity shown
ACCESS_CASES: list[Any] = [
    pytest.param(
        SESSION,
        WORKER_IDENTITY,
        None,
        "allowed",
        ["identity:WorkerSend"],
        [],
        "allowed",
        id="same-account-identity-alone",
    ),
    # An account principal delegates to the account's identity policies: within the account
    # it grants nothing by itself (IAM User Guide, "Policy evaluation logic").
    pytest.param(
        SESSION,
        EMPTY_IDENTITY,
        QUEUE_GRANTS_ACCOUNT,
        "implicit_deny",
        [],
        [],
        "implicit_deny",
        id="same-account-resource-alone",
    ),
    pytest.param(
        SESSION,
        EMPTY_IDENTITY,
        None,
        "implicit_deny",
        [],
        [],
        "implicit_deny",
        id="same-account-neither",
    ),
    pytest.param(
        SESSION,
        DENY_IDENTITY,
        QUEUE_GRANTS_ACCOUNT,
        "explicit_deny",
        ["identity:DenyAll"],
        [],
        "explicit_deny",
        id="identity-deny-wins",
    ),
    pytest.param(
        OTHER_SESSION,
        WORKER_IDENTITY,
        QUEUE_GRANTS_OTHER,
        "allowed",
        ["identity:WorkerSend", "resource:lbl"],
        [],
        "allowed",
        id="cross-account-both-allow",
    ),
    pytest.param(
        OTHER_SESSION,
        EMPTY_IDENTITY,
        QUEUE_GRANTS_OTHER,
        "implicit_deny",
        [],
        [],
        "implicit_deny",
        id="cross-account-resource-alone-is-not-enough",
    ),
    pytest.param(
        OTHER_SESSION,
        WORKER_IDENTITY,
        None,
        "implicit_deny",
        [],
        [],
        "allowed",
        id="cross-account-identity-alone-is-not-enough",
    ),
    pytest.param(
        OTHER_SESSION,
        WORKER_IDENTITY,
        QUEUE_DENIES,
        "explicit_deny",
        ["resource:Block"],
        [],
        "allowed",
        id="cross-account-resource-deny",
    ),
    pytest.param(
        OTHER_SESSION,
        None,
        QUEUE_GRANTS_OTHER,
        "indeterminate",
        [],
        [],
        "unknown",
        id="cross-account-unknown-identity-matters",
    ),
    pytest.param(
        OTHER_SESSION,
        "unknown",
        QUEUE_GRANTS_ACCOUNT,
        "implicit_deny",
        [],
        [],
        "unknown",
        id="cross-account-unknown-identity-does-not-matter",
    ),
    pytest.param(
        SESSION,
        None,
        QUEUE_GRANTS_ACCOUNT,
        "indeterminate",
        [],
        [],
        "unknown",
        id="same-account-unknown-identity-resource-grants",
    ),
    pytest.param(
        SESSION,
        None,
        None,
        "indeterminate",
        [],
        [],
        "unknown",
        id="same-account-unknown-identity-no-queue-policy",
    ),
    pytest.param(
        OTHER_SESSION,
        None,
        QUEUE_DENIES,
        "explicit_deny",
        ["resource:Block"],
        [],
        "unknown",
        id="unknown-identity-resource-deny",
    ),
    pytest.param(
        OTHER_SESSION,
        "allowed",
        QUEUE_GRANTS_OTHER,
        "allowed",
        ["resource:lbl"],
        [],
        "allowed",
        id="simulator-allowed",
    ),
    pytest.param(
        SESSION,
        "explicitDeny",
        QUEUE_GRANTS_ACCOUNT,
        "explicit_deny",
        [],
        [],
        "explicit_deny",
        id="simulator-explicit-deny",
    ),
    pytest.param(
        OTHER_SESSION,
        "implicitDeny",
        QUEUE_GRANTS_OTHER,
        "implicit_deny",
        [],
        [],
        "implicit_deny",
        id="simulator-implicit-deny",
    ),
    pytest.param(
        OTHER_SESSION,
        "allowed",
        QUEUE_NEEDS_SOURCE,
        "indeterminate",
        ["resource:lbl"],
        ["aws:SourceAccount"],
        "allowed",
        id="cross-account-resource-indeterminate",
    ),
    pytest.param(
        OTHER_SESSION,
        "implicit_deny",
        QUEUE_NEEDS_SOURCE,
        "implicit_deny",
        [],
        [],
        "implicit_deny",
        id="cross-account-resource-doubt-irrelevant",
    ),
    pytest.param(
        SESSION,
        [EMPTY_IDENTITY, WORKER_IDENTITY],
        None,
        "allowed",
        ["identity[1]:WorkerSend"],
        [],
        "allowed",
        id="several-identity-policies",
    ),
]


@pytest.mark.parametrize(
    ("principal", "identity", "resource_policy", "decision", "statements", "missing", "shown"),
    ACCESS_CASES,
)
def test_evaluate_access(
    principal: str,
    identity: Any,
    resource_policy: Any,
    decision: str,
    statements: list[str],
    missing: list[str],
    shown: str,
) -> None:
    result = evaluate_access(req(principal), identity=identity, resource_policy=resource_policy)
    assert isinstance(result, AccessDecision)
    assert result.to_json() == {
        "decision": decision,
        "statements": statements,
        "missing_context": missing,
    }
    assert result.identity == shown
    assert result.same_account == (principal == SESSION)


def test_evaluate_access_resource_account_and_unknown_relation() -> None:
    no_resource = req(OTHER_SESSION, resource=None)
    star = pol(stmt("Any", principal="*", resource="*"))
    # The account comes from the argument when the request names no queue.
    crossed = evaluate_access(
        no_resource, identity="implicit_deny", resource_policy=star, resource_account=ACCT
    )
    assert (crossed.decision, crossed.same_account) == ("implicit_deny", False)
    # Without it the relation is unknown: same account would allow, cross-account would not.
    unknown = evaluate_access(no_resource, identity="implicit_deny", resource_policy=star)
    assert (unknown.decision, unknown.same_account) == ("indeterminate", None)
    both = evaluate_access(no_resource, identity="allowed", resource_policy=star)
    assert both.decision == "allowed"


def test_evaluate_access_rejects_unknown_verdict() -> None:
    with pytest.raises(PolicyError, match="unknown identity verdict 'maybe'"):
        evaluate_access(req(), identity="maybe", resource_policy=None)


# ---- properties

PRINCIPALS = [
    SESSION,
    ROLE,
    USER,
    OTHER_SESSION,
    OTHER,
    f"arn:aws:iam::{ACCT}:root",
    "sns.amazonaws.com",
]
ACTIONS = [
    "sqs:SendMessage",
    "sqs:SendMessageBatch",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:DeleteMessageBatch",
    "sqs:PurgeQueue",
    "sqs:GetQueueAttributes",
]
RESOURCES = [QUEUE, OTHER_QUEUE, f"arn:aws:sqs:us-west-2:{OTHER}:raas-x", None]
FULL_CONTEXT: dict[str, Any] = {
    "aws:SourceAccount": ACCT,
    "aws:SecureTransport": "true",
    "aws:SourceIp": "10.1.2.3",
    "aws:TagKeys": ["env", "team"],
    "aws:SourceArn": None,
    "aws:PrincipalAccount": ACCT,
    "aws:PrincipalTag/team": "raas",
    "aws:ResourceTag/team": None,
}

principal_specs = st.sampled_from(
    [
        "*",
        {"AWS": "*"},
        {"AWS": ACCT},
        {"AWS": f"arn:aws:iam::{OTHER}:root"},
        {"AWS": ROLE},
        {"AWS": [USER, OTHER_ROLE]},
        {"AWS": f"arn:aws:iam::{ACCT}:role/raas-*"},
        {"Service": "sns.amazonaws.com"},
    ]
)
action_specs = st.sampled_from(
    [
        "*",
        "sqs:*",
        "SQS:Send*",
        "sqs:?eceiveMessage",
        "sqs:DeleteMessage",
        ["sqs:SendMessage", "sqs:PurgeQueue"],
        "sqs:Get*",
    ]
)
resource_specs = st.sampled_from(
    [
        "*",
        QUEUE,
        f"arn:aws:sqs:*:{ACCT}:raas-*",
        OTHER_QUEUE,
        f"arn:aws:sqs:*:{ACCT}:${{aws:PrincipalTag/team}}-*",
        f"arn:aws:sqs:*:{ACCT}:${{aws:ResourceTag/team}}-*",
    ]
)
conditions = st.sampled_from(
    [
        None,
        SOURCE_ACCOUNT,
        {"StringNotEquals": {"aws:SourceAccount": OTHER}},
        {"Bool": {"aws:SecureTransport": "false"}},
        {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}, "Bool": {"aws:SecureTransport": True}},
        {"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "team", "owner"]}},
        {"ForAnyValue:StringLike": {"aws:TagKeys": "own*"}},
        {"Null": {"aws:SourceArn": "true"}},
        {"ArnLikeIfExists": {"aws:SourceArn": f"arn:aws:sns:*:{ACCT}:*"}},
        {"StringEquals": {"aws:SourceAccount": "${aws:PrincipalAccount}"}},
        {"StringNotEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team, 'none'}"}},
        {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:${aws:PrincipalAccount}:*"}},
    ]
)


@st.composite
def statements(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Deny"]))}
    if draw(st.booleans()):
        out["Sid"] = draw(st.sampled_from(["A", "B", "C", "D"]))
    for name, values in (
        ("Principal", principal_specs),
        ("Action", action_specs),
        ("Resource", resource_specs),
    ):
        negated = draw(st.integers(0, 5)) == 0
        out[("Not" if negated else "") + name] = draw(values)
    condition = draw(conditions)
    if condition is not None:
        out["Condition"] = condition
    return out


# Without Version 2012-10-17 the variables above are plain text.
policies = st.builds(
    lambda version, statements: {**version, "Statement": statements},
    st.sampled_from([{}, {"Version": "2012-10-17"}]),
    st.lists(statements(), max_size=5),
)
contexts = st.sets(st.sampled_from(sorted(FULL_CONTEXT))).map(
    lambda keys: {k: FULL_CONTEXT[k] for k in keys}
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    return Request(
        draw(st.sampled_from(PRINCIPALS)),
        draw(st.sampled_from(ACTIONS)),
        draw(st.sampled_from(RESOURCES)),
        draw(contexts),
    )


DENY_EVERYTHING = {
    "Sid": "DenyEverything",
    "Effect": "Deny",
    "Principal": "*",
    "Action": "*",
    "Resource": "*",
}


@settings(max_examples=200)
@given(policies, requests())
def test_unconditional_deny_always_wins(policy: dict[str, Any], request_: Request) -> None:
    denied = {"Statement": [*policy["Statement"], DENY_EVERYTHING]}
    result = evaluate(denied, request_)
    assert result.decision == "explicit_deny"
    assert "DenyEverything" in result.statements
    assert result.missing_context == []


@given(requests(), st.booleans())
def test_no_statements_is_implicit_deny(request_: Request, identity: bool) -> None:
    result = evaluate({"Statement": []}, request_, identity=identity)
    assert result.to_json() == {
        "decision": "implicit_deny",
        "statements": [],
        "missing_context": [],
    }


@settings(max_examples=200)
@given(policies, requests(), st.randoms(use_true_random=False))
def test_action_case_never_matters(policy: dict[str, Any], request_: Request, rnd: Any) -> None:
    shuffled = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in request_.action)
    other = Request(request_.principal, shuffled, request_.resource, request_.context)
    assert evaluate(policy, other) == evaluate(policy, request_)


@settings(max_examples=200)
@given(policies, requests())
def test_batch_actions_decide_like_their_single_action(
    policy: dict[str, Any],
    request_: Request,
) -> None:
    single = Request(
        request_.principal, normalize_action(request_.action), request_.resource, request_.context
    )
    assert evaluate(policy, single) == evaluate(policy, request_)


@settings(max_examples=300)
@given(policies, requests())
def test_more_context_only_settles_the_answer(policy: dict[str, Any], request_: Request) -> None:
    partial = evaluate(policy, request_)
    full = evaluate(
        policy, Request(request_.principal, request_.action, request_.resource, FULL_CONTEXT)
    )
    assert full.decision != "indeterminate"
    assert full.decision in partial.outcomes
    if partial.decision != "indeterminate":
        # Settled answers stay; more statements may be known to apply, none stop applying.
        assert full.decision == partial.decision
        assert set(partial.statements) <= set(full.statements)
    # The reported missing keys are enough to settle it.
    settled = {**request_.context, **{k: FULL_CONTEXT[k] for k in partial.missing_context}}
    answer = evaluate(
        policy, Request(request_.principal, request_.action, request_.resource, settled)
    )
    assert answer.decision == full.decision
    assert (partial.decision == "indeterminate") == bool(partial.missing_context)
    assert partial.missing_context == sorted(partial.missing_context, key=str.lower)


@settings(max_examples=200)
@given(st.sampled_from(PRINCIPALS), policies)
def test_unknown_identity_is_decided_only_when_both_verdicts_agree(
    principal: str,
    resource_policy: dict[str, Any],
) -> None:
    request_ = req(principal)
    unknown = evaluate_access(request_, identity="unknown", resource_policy=resource_policy)
    allowed = evaluate_access(request_, identity="allowed", resource_policy=resource_policy)
    denied = evaluate_access(request_, identity="implicit_deny", resource_policy=resource_policy)
    if allowed.decision == denied.decision != "indeterminate":
        assert unknown.decision == allowed.decision
    else:
        assert unknown.decision == "indeterminate"
