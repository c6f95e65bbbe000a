"""The evaluator against the IAM User Guide, one table per class of rule that an independent
comparison found raasctl getting wrong, and the properties every decision keeps.

Each table names the rule it follows; the decisions are what AWS answers for that request.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raasctl.policy import (
    SESSION_ISSUER_KEY,
    PolicyError,
    Request,
    check_action,
    evaluate,
    evaluate_access,
)

ACCT = "111122223333"
OTHER = "444455556666"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCT}:raas-cron-jobs-work-uat.fifo"
ROLE = f"arn:aws:iam::{ACCT}:role/service/raas-worker"
SESSION = f"arn:aws:sts::{ACCT}:assumed-role/raas-worker/i-0abc123"
USER = f"arn:aws:iam::{ACCT}:user/alice"
FEDERATED = f"arn:aws:sts::{ACCT}:federated-user/alice-laptop"
OTHER_SESSION = f"arn:aws:sts::{OTHER}:assumed-role/raas-worker/ci-7"
ROOT = f"arn:aws:iam::{ACCT}:root"


def stmt(sid: str, effect: str = "Allow", principal: Any = "*", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Sid": sid,
        "Effect": effect,
        "Action": "sqs:SendMessage",
        "Resource": QUEUE,
        **extra,
    }
    if principal is not None:
        out["Principal"] = principal
    return out


def pol(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def identity_pol(*statements: dict[str, Any]) -> dict[str, Any]:
    return pol(*({k: v for k, v in s.items() if k != "Principal"} for s in statements))


def req(principal: str = SESSION, resource: str | None = QUEUE, **context: Any) -> Request:
    keys = {k.replace("__", ":"): v for k, v in context.items()}
    return Request(principal, "sqs:SendMessage", resource, keys)


GRANTS_NOTHING = identity_pol()
GRANTS_SEND = identity_pol(stmt("IdentitySend", principal=None))


# --------------------------------------------------------------------------- 1. account principal

# "Policy evaluation logic" (same account): a resource-based policy that names an IAM user,
# role or role session grants on its own; one that names the account (its id or :root ARN)
# delegates to the account's identity-based policies, which must then allow. Across accounts
# both the identity side and the resource policy must allow.
ACCOUNT_CASES: list[Any] = [
    pytest.param(SESSION, GRANTS_NOTHING, {"AWS": ACCT}, "implicit_deny", id="account-id-alone"),
    pytest.param(SESSION, GRANTS_NOTHING, {"AWS": ROOT}, "implicit_deny", id="root-arn-alone"),
    pytest.param(USER, GRANTS_NOTHING, {"AWS": [ACCT]}, "implicit_deny", id="user-account"),
    pytest.param(SESSION, GRANTS_SEND, {"AWS": ROOT}, "allowed", id="account-and-identity"),
    pytest.param(SESSION, GRANTS_NOTHING, {"AWS": ROLE}, "allowed", id="role-named"),
    pytest.param(SESSION, GRANTS_NOTHING, {"AWS": SESSION}, "allowed", id="session-named"),
    pytest.param(USER, GRANTS_NOTHING, {"AWS": USER}, "allowed", id="user-named"),
    pytest.param(SESSION, GRANTS_NOTHING, "*", "allowed", id="everyone"),
    pytest.param(SESSION, GRANTS_NOTHING, {"AWS": [ROOT, ROLE]}, "allowed", id="named-among"),
    pytest.param(SESSION, None, {"AWS": ROOT}, "indeterminate", id="account-identity-unknown"),
    pytest.param(SESSION, None, {"AWS": ROLE}, "allowed", id="named-identity-unknown"),
    pytest.param(OTHER_SESSION, GRANTS_SEND, {"AWS": OTHER}, "allowed", id="cross-account"),
    pytest.param(OTHER_SESSION, GRANTS_NOTHING, {"AWS": OTHER}, "implicit_deny", id="cross-no-id"),
]


@pytest.mark.parametrize(("principal", "identity", "spec", "decision"), ACCOUNT_CASES)
def test_account_principal_delegates_within_the_account(
    principal: str, identity: Any, spec: Any, decision: str
) -> None:
    result = evaluate_access(
        req(principal), identity=identity, resource_policy=pol(stmt("Q", principal=spec))
    )
    assert result.decision == decision


def test_account_principal_deny_still_denies_within_the_account() -> None:
    # An explicit deny wins wherever it is, also one that reaches the principal by its account.
    queue = pol(stmt("DenyAccount", "Deny", {"AWS": ACCT}))
    result = evaluate_access(req(), identity=GRANTS_SEND, resource_policy=queue)
    assert (result.decision, result.statements) == ("explicit_deny", ["resource:DenyAccount"])


def test_one_policy_alone_keeps_its_documented_meaning() -> None:
    # explain --policy: an account principal matches every principal of that account.
    result = evaluate(pol(stmt("Account", principal={"AWS": ROOT})), req())
    assert (result.decision, result.statements) == ("allowed", ["Account"])


def test_account_principal_with_unknown_relation_is_indeterminate() -> None:
    # No resource, so whose account it is is unknown: same account would need the identity.
    star = pol(stmt("Account", principal={"AWS": ACCT}, Resource="*"))
    result = evaluate_access(req(resource=None), identity=GRANTS_NOTHING, resource_policy=star)
    assert result.decision == "implicit_deny"
    result = evaluate_access(
        req(resource=None), identity=GRANTS_NOTHING, resource_policy=star, resource_account=OTHER
    )
    assert result.decision == "implicit_deny"


# --------------------------------------------------------------------------- 2. negated operators

# "Condition operators": NumericNotEquals and DateNotEquals are negated operators. Several
# values for one key are evaluated with a logical NOR (true only when the value equals none of
# them), and a negated operator is true when the key is absent from the request.
NEGATED_CASES: list[Any] = [
    ({"NumericNotEquals": {"sqs:DelaySeconds": ["5", "10"]}}, {"sqs:DelaySeconds": "5"}, False),
    ({"NumericNotEquals": {"sqs:DelaySeconds": ["5", "10"]}}, {"sqs:DelaySeconds": "10"}, False),
    ({"NumericNotEquals": {"sqs:DelaySeconds": ["5", "10"]}}, {"sqs:DelaySeconds": "7"}, True),
    ({"NumericNotEquals": {"sqs:DelaySeconds": "5"}}, {"sqs:DelaySeconds": None}, True),
    (
        {"DateNotEquals": {"aws:CurrentTime": ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"]}},
        {"aws:CurrentTime": "2026-06-01T00:00:00Z"},
        False,
    ),
    (
        {"DateNotEquals": {"aws:CurrentTime": ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"]}},
        {"aws:CurrentTime": "2026-03-01T00:00:00Z"},
        True,
    ),
    (
        {"DateNotEquals": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}},
        {"aws:CurrentTime": None},
        True,
    ),
    ({"NumericEquals": {"sqs:DelaySeconds": "5"}}, {"sqs:DelaySeconds": None}, False),
]


@pytest.mark.parametrize(("condition", "context", "deny_applies"), NEGATED_CASES)
def test_negated_numeric_and_date_operators(
    condition: dict[str, Any], context: dict[str, Any], deny_applies: bool
) -> None:
    policy = pol(stmt("AllowAll"), stmt("Fence", "Deny", Condition=condition))
    result = evaluate(policy, Request(SESSION, "sqs:SendMessage", QUEUE, context))
    assert result.decision == ("explicit_deny" if deny_applies else "allowed")


# --------------------------------------------------------------------------- 3. service wildcard

# "Principal": the wildcard principal is "*" or {"AWS": "*"}; in a Service, Federated or
# CanonicalUser entry "*" is just a name, which no principal has.
SERVICE_CASES: list[Any] = [
    ({"Service": "*"}, USER, "implicit_deny"),
    ({"Service": "*"}, SESSION, "implicit_deny"),
    ({"Service": "*"}, "sns.amazonaws.com", "implicit_deny"),
    ({"Federated": "*"}, FEDERATED, "implicit_deny"),
    ({"Service": "sns.amazonaws.com"}, "sns.amazonaws.com", "allowed"),
    ({"AWS": "*"}, USER, "allowed"),
    ("*", "sns.amazonaws.com", "allowed"),
]


@pytest.mark.parametrize(("spec", "principal", "decision"), SERVICE_CASES)
def test_only_star_and_aws_star_are_wildcard_principals(
    spec: Any, principal: str, decision: str
) -> None:
    assert evaluate(pol(stmt("S", principal=spec)), req(principal)).decision == decision


# --------------------------------------------------------------------------- 4. principal ARNs

# "Principal": wildcards cannot be used to match part of a principal name or ARN; an entry
# with one matches no principal (and explain says so in its warnings).
WILDCARD_CASES: list[Any] = [
    pytest.param(
        {"AWS": f"arn:aws:iam::{ACCT}:role/*"}, SESSION, id="wildcard-role-matches-session"
    ),
    pytest.param({"AWS": f"arn:aws:iam::{ACCT}:role/raas-*"}, ROLE, id="wildcard-role-prefix"),
    pytest.param({"AWS": f"arn:aws:iam::{ACCT}:user/a*"}, USER, id="wildcard-user-arn"),
    pytest.param({"AWS": "arn:aws:iam::*:root"}, SESSION, id="wildcard-account"),
    pytest.param({"AWS": f"arn:aws:iam::{ACCT}:user/alic?"}, USER, id="question-mark"),
]


@pytest.mark.parametrize(("spec", "principal"), WILDCARD_CASES)
def test_wildcards_in_principal_arns_match_nothing(spec: Any, principal: str) -> None:
    result = evaluate(pol(stmt("A", principal=spec)), req(principal))
    assert (result.decision, result.statements) == ("implicit_deny", [])
    assert len(result.warnings) == 1
    assert "statement A" in result.warnings[0] and "matches no principal" in result.warnings[0]
    assert result.to_json()["warnings"] == result.warnings


def test_wildcard_in_not_principal_exempts_nobody() -> None:
    policy = pol(
        stmt("AllowAll"),
        stmt("DenyOthers", "Deny", None, NotPrincipal={"AWS": f"arn:aws:iam::{ACCT}:role/*"}),
    )
    assert evaluate(policy, req(SESSION)).decision == "explicit_deny"


# --------------------------------------------------------------------------- 5. Resource variables

# "Policy variables": in a Resource ARN variables may be used only in the resource part, after
# the fifth colon; in the first five fields they are literal text.
VARIABLE_CASES: list[Any] = [
    pytest.param(
        "arn:aws:sqs:*:${aws:PrincipalAccount}:*", QUEUE, "implicit_deny", id="account-field"
    ),
    pytest.param("arn:aws:sqs:${aws:RequestedRegion}:*:*", QUEUE, "implicit_deny", id="region"),
    pytest.param(
        "arn:aws:sqs:*:${aws:PrincipalAccount}:*",
        "arn:aws:sqs:us-east-1:${aws:PrincipalAccount}:q",
        "allowed",
        id="literal-text-matches-itself",
    ),
    pytest.param(
        f"arn:aws:sqs:*:{ACCT}:${{aws:PrincipalTag/team}}-*",
        f"arn:aws:sqs:us-east-1:{ACCT}:raas-cron-jobs",
        "allowed",
        id="resource-part",
    ),
]


@pytest.mark.parametrize(("pattern", "resource", "decision"), VARIABLE_CASES)
def test_variables_only_in_the_resource_part(pattern: str, resource: str, decision: str) -> None:
    context = {
        "aws:PrincipalAccount": ACCT,
        "aws:RequestedRegion": "us-east-1",
        "aws:PrincipalTag/team": "raas",
    }
    result = evaluate(
        pol(stmt("R", Resource=pattern)), Request(SESSION, "sqs:SendMessage", resource, context)
    )
    assert result.decision == decision


# --------------------------------------------------------------------------- 6. federated users

# "Session policies" / "Principal" (AWS STS federated user sessions): a resource-based policy
# naming the IAM user that called GetFederationToken applies to that user's federated
# sessions; one naming the session ARN applies to that session. The session ARN does not say
# which user created it, so that is given as raasctl:SessionIssuer, else the match is open.
FEDERATED_CASES: list[Any] = [
    pytest.param({"AWS": USER}, {SESSION_ISSUER_KEY: USER}, "allowed", id="issuer-named"),
    pytest.param(
        {"AWS": USER},
        {SESSION_ISSUER_KEY: f"arn:aws:iam::{ACCT}:user/bob"},
        "implicit_deny",
        id="other-issuer",
    ),
    pytest.param({"AWS": USER}, {}, "indeterminate", id="issuer-unknown"),
    pytest.param({"AWS": FEDERATED}, {}, "allowed", id="session-named"),
    pytest.param({"AWS": ROLE}, {}, "implicit_deny", id="role-is-not-the-issuer"),
    pytest.param({"AWS": f"arn:aws:iam::{OTHER}:user/alice"}, {}, "implicit_deny", id="other-acct"),
]


@pytest.mark.parametrize(("spec", "context", "decision"), FEDERATED_CASES)
def test_federated_user_sessions(spec: Any, context: dict[str, Any], decision: str) -> None:
    result = evaluate(
        pol(stmt("F", principal=spec)), Request(FEDERATED, "sqs:SendMessage", QUEUE, context)
    )
    assert result.decision == decision
    if decision == "indeterminate":
        assert result.missing_context == [SESSION_ISSUER_KEY]


def test_federated_issuer_grants_on_its_own_within_the_account() -> None:
    queue = pol(stmt("F", principal={"AWS": USER}))
    request = Request(FEDERATED, "sqs:SendMessage", QUEUE, {SESSION_ISSUER_KEY: USER})
    assert evaluate_access(request, identity=GRANTS_NOTHING, resource_policy=queue).decision == (
        "allowed"
    )


# --------------------------------------------------------------------------- unknown resource


def test_unknown_resource_leaves_a_scoped_statement_open() -> None:
    policy = pol(stmt("Scoped"), stmt("Anywhere", Action="sqs:ReceiveMessage", Resource="*"))
    unknown = Request(SESSION, "sqs:SendMessage", None, {}, resource_unknown=True)
    result = evaluate(policy, unknown)
    assert (result.decision, result.statements) == ("indeterminate", ["Scoped"])
    assert result.warnings == [
        f"statement Scoped applies only to {QUEUE}: the resource is not given"
    ]
    # A statement for every resource is decided without one.
    star = pol(stmt("Star", Resource="*"))
    assert evaluate(star, unknown).decision == "allowed"
    # A request that names no resource (the resource is known not to exist) is decided.
    assert evaluate(policy, Request(SESSION, "sqs:SendMessage")).decision == "implicit_deny"


# --------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("sqs:SendMesage", "unknown SQS action 'sqs:SendMesage': did you mean sqs:SendMessage?"),
        (
            "SendMessage",
            "action 'SendMessage' has no service prefix: did you mean sqs:SendMessage?",
        ),
        ("sqs:Send*", "is not one action"),
        ("sqs:Frobnicate", "unknown SQS action 'sqs:Frobnicate'"),
    ],
)
def test_check_action_names_the_problem_and_suggests(action: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("?", r"\?").replace("*", r"\*")):
        check_action(action)


def test_check_action_accepts_sqs_and_other_services() -> None:
    assert check_action("SQS:sendmessagebatch") == "SQS:sendmessagebatch"
    assert check_action("kms:Decrypt") == "kms:Decrypt"


# --------------------------------------------------------------------------- properties

PRINCIPALS = [SESSION, ROLE, USER, FEDERATED, OTHER_SESSION, ACCT, ROOT, "sns.amazonaws.com"]
principal_specs = st.sampled_from(
    [
        "*",
        {"AWS": "*"},
        {"AWS": ACCT},
        {"AWS": ROOT},
        {"AWS": OTHER},
        {"AWS": ROLE},
        {"AWS": [USER, SESSION]},
        {"AWS": f"arn:aws:iam::{ACCT}:role/*"},
        {"Service": "sns.amazonaws.com"},
        {"Service": "*"},
    ]
)
action_specs = st.sampled_from(
    ["*", "sqs:*", "sqs:Send*", "sqs:SendMessage", ["sqs:ReceiveMessage", "sqs:PurgeQueue"]]
)
resource_specs = st.sampled_from(
    ["*", QUEUE, f"arn:aws:sqs:*:{ACCT}:raas-*", f"arn:aws:sqs:*:{ACCT}:${{aws:username}}-*"]
)
conditions = st.sampled_from(
    [
        None,
        {"Bool": {"aws:SecureTransport": "false"}},
        {"StringEquals": {"aws:PrincipalAccount": ACCT}},
        {"NumericNotEquals": {"sqs:DelaySeconds": ["0", "5"]}},
        {"DateNotEquals": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}},
        {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCT}:role/*"}},
        {"Null": {"aws:SourceVpce": "true"}},
    ]
)


@st.composite
def statements(draw: st.DrawFn, principal: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Deny"]))}
    if principal:
        key = "NotPrincipal" if draw(st.integers(0, 6)) == 0 else "Principal"
        out[key] = draw(principal_specs)
    out["Action"] = draw(action_specs)
    out["Resource" if draw(st.integers(0, 6)) else "NotResource"] = draw(resource_specs)
    condition = draw(conditions)
    if condition is not None:
        out["Condition"] = condition
    return out


def policies(principal: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(statements(principal), max_size=4).map(lambda found: pol(*found))


CONTEXT = {
    "aws:SecureTransport": "true",
    "aws:PrincipalAccount": ACCT,
    "sqs:DelaySeconds": "5",
    "aws:CurrentTime": None,
    "aws:PrincipalArn": ROLE,
    "aws:SourceVpce": None,
    "aws:username": "alice",
}


@st.composite
def requests(draw: st.DrawFn) -> Request:
    keys = draw(st.sets(st.sampled_from(sorted(CONTEXT))))
    return Request(
        draw(st.sampled_from(PRINCIPALS)),
        draw(st.sampled_from(["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:PurgeQueue"])),
        draw(st.sampled_from([QUEUE, f"arn:aws:sqs:us-east-1:{OTHER}:raas-x", None])),
        {key: CONTEXT[key] for key in keys},
        resource_unknown=draw(st.booleans()),
    )


DENY_ALL = {"Sid": "DenyAll", "Effect": "Deny", "Action": "*", "Resource": "*"}


@settings(max_examples=300, deadline=None)
@given(policies(False), policies(True), requests(), st.sampled_from(["identity", "resource"]))
def test_an_explicit_deny_always_wins(
    identity: dict[str, Any], resource: dict[str, Any], request_: Request, side: str
) -> None:
    # "Policy evaluation logic": an explicit deny in any policy overrides any allow.
    if side == "identity":
        identity = {**identity, "Statement": [*identity["Statement"], DENY_ALL]}
    else:
        resource = {
            **resource,
            "Statement": [*resource["Statement"], {**DENY_ALL, "Principal": "*"}],
        }
    result = evaluate_access(request_, identity=identity, resource_policy=resource)
    assert result.decision == "explicit_deny"
    assert f"{side}:DenyAll" in result.statements
    assert result.missing_context == []


UNRELATED = [
    # Another service's action: it can never apply to an SQS request.
    {"Sid": "Kms", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
    # Another account's queue, with a condition on a key no request here knows.
    {
        "Sid": "ElsewhereAllow",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "sqs:*",
        "Resource": "arn:aws:sqs:eu-west-1:999988887777:unrelated",
        "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}},
    },
]


@settings(max_examples=300, deadline=None)
@given(policies(True), policies(False), requests(), st.sampled_from(UNRELATED), st.booleans())
def test_an_unrelated_statement_never_changes_a_decision(
    resource: dict[str, Any],
    identity: dict[str, Any],
    request_: Request,
    extra: dict[str, Any],
    both: bool,
) -> None:
    resource_plus = {**resource, "Statement": [*resource["Statement"], extra]}
    if extra["Resource"] != "*" and request_.resource is None:
        # Without a resource a statement for one queue may or may not apply: not unrelated.
        return
    before = evaluate(resource, request_)
    after = evaluate(resource_plus, request_)
    assert after.to_json() == before.to_json()
    if both:
        combined = evaluate_access(request_, identity=identity, resource_policy=resource)
        plus = evaluate_access(request_, identity=identity, resource_policy=resource_plus)
        assert plus.to_json() == combined.to_json()
        assert (plus.identity, plus.resource) == (combined.identity, combined.resource)
