"""Who may do what to an environment's queues: `access check` and `access explain`.

`check_environment` reads, and never changes, what AWS already knows: the credentials botocore
resolved, the caller (STS GetCallerIdentity), each queue's attributes (GetQueueAttributes:
its policy, KMS key and DLQ), and the caller's identity policies as far as the IAM policy
simulator may be asked. It never sends, receives or deletes a message to find out. Each
(queue, action) pair gets a decision from the offline evaluator (raasctl.policy), which names
the statements that decided it.

The report types are in raasctl.access_report; `access explain` is in raasctl.explain.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from raasctl.access_report import (
    DENIED,
    Caller,
    EnvReport,
    PermissionRow,
    QueueInfo,
)
from raasctl.aws import LONG_TERM, AwsClients
from raasctl.aws_errors import AWS_FAILURES, Category, category, error_detail
from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import EnvironmentConfig, SqsQueueConfig
from raasctl.logs import event
from raasctl.policy import (
    ALLOWED,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    INDETERMINATE,
    ContextValue,
    Decision,
    PolicyError,
    Request,
    SideInput,
    account_of,
    evaluate,
    evaluate_access,
)

SQS_ACTIONS = (
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
# With SSE-KMS the caller also needs the key: a sender to encrypt, a receiver to decrypt.
KMS_ACTIONS = {"sqs:SendMessage": "kms:GenerateDataKey", "sqs:ReceiveMessage": "kms:Decrypt"}
UNKNOWN = "unknown"

_SIM_DECISIONS = {
    "allowed": ALLOWED,
    "explicitdeny": EXPLICIT_DENY,
    "implicitdeny": IMPLICIT_DENY,
}
_ASSUMED_ROLE_RE = re.compile(r"^arn:[^:]+:sts::\d{12}:assumed-role/([^/]+)/.+$")

# --------------------------------------------------------------------------- check


def check_environment(env_name: str, env: EnvironmentConfig, aws: AwsClients) -> EnvReport:
    """Check one environment. Raises ConfigError (exit 2) for unusable credentials, such as a
    temporary key without its session token, before any call is made."""
    report = EnvReport(env_name, deployed=env.deployed)
    if not isinstance(env.queue, SqsQueueConfig):
        report.embedded = True
        return report
    credentials = aws.credential_info()
    report.credentials = credentials
    if credentials.source is None:
        report.add_error(
            "no AWS credentials found (set a profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run on a machine with a role)",
            ErrorCode.CREDENTIALS_MISSING,
        )
        return report
    if env.deployed and credentials.key_kind == LONG_TERM:
        message = (
            f"environment {env_name!r} is marked deployed but is reached with long-term keys "
            f"(AKIA..., from {credentials.source}); its workers should use the machine's role"
        )
        report.warnings.append(message)
        event(InfoCode.CREDENTIALS_LONG_TERM, message, level=logging.WARNING, env=env_name)
    caller = _caller(aws, report)
    if caller is None:
        return report
    report.queues = _queues(aws, env.queue, report)
    identity = _IdentitySide(aws, caller)
    report.caller = identity.caller
    context = _known_context(aws, identity.caller)
    for queue in report.queues:
        if queue.arn is None or not (queue.answered or queue.refused):
            continue
        sides = identity.decisions(queue.arn)
        for action in SQS_ACTIONS:
            report.permissions.append(_row(queue, action, identity.caller, sides, context))
    report.identity_source = identity.source
    return report


def _caller(aws: AwsClients, report: EnvReport) -> Caller | None:
    try:
        found = aws.client("sts").get_caller_identity()
    except AWS_FAILURES as exc:
        code, message = error_detail(exc)
        denied = category(exc) is Category.ACCESS_DENIED
        cause = ErrorCode.ACCESS_DENIED if denied else ErrorCode.AWS_FAILED
        report.add_error(f"STS GetCallerIdentity failed: {code}: {message}".rstrip(": "), cause)
        return None
    return Caller(str(found["Account"]), str(found["Arn"]), str(found["UserId"]))


# --------------------------------------------------------------------------- queues


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _arn_from_url(url: str, region: str) -> str | None:
    """A queue URL ends in /<account>/<name>; the ARN is built from those and the region."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 2 or not re.fullmatch(r"\d{12}", parts[-2]):
        return None
    return f"arn:{_partition(region)}:sqs:{region}:{parts[-2]}:{parts[-1]}"


def _queues(aws: AwsClients, cfg: SqsQueueConfig, report: EnvReport) -> list[QueueInfo]:
    sqs = aws.client("sqs")
    main = _describe(sqs, "queue", cfg.url, aws.region)
    found = [main]
    if main.error:
        report.add_error(f"queue {main.name}: {main.error}", main.cause)
    dlq_url = cfg.dlq_url
    if dlq_url is None and main.redrive_target:
        dlq_url = _dlq_url(sqs, main.redrive_target, report)
    if dlq_url is None:
        if main.answered and not main.redrive_target:
            report.warnings.append(
                f"queue {main.name} has no DLQ: no dlq_url in the config and no RedrivePolicy"
            )
        return found
    if dlq_url == cfg.url:
        report.warnings.append(f"queue {main.name} is configured as its own DLQ (dlq_url)")
        return found
    dlq = _describe(sqs, "dlq", dlq_url, aws.region)
    if dlq.error:
        report.add_error(f"DLQ {dlq.name}: {dlq.error}", dlq.cause)
    if main.redrive_target and dlq.arn and dlq.arn != main.redrive_target:
        report.warnings.append(
            f"dlq_url {dlq_url} is not the queue's RedrivePolicy target {main.redrive_target}"
        )
    found.append(dlq)
    return found


def _dlq_url(sqs: Any, target_arn: str, report: EnvReport) -> str | None:
    parts = target_arn.split(":")
    if len(parts) != 6:
        report.add_error(
            f"the queue's RedrivePolicy names {target_arn!r}, not a queue ARN",
            ErrorCode.CHECK_FAILED,
        )
        return None
    account, name = parts[4], parts[5]
    try:
        return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
    except AWS_FAILURES as exc:
        code, _ = error_detail(exc)
        missing = category(exc) is Category.NOT_FOUND
        what = "does not exist" if missing else f"GetQueueUrl failed: {code}"
        cause = ErrorCode.QUEUE_NOT_FOUND if missing else ErrorCode.AWS_FAILED
        report.add_error(f"DLQ {name} (the queue's RedrivePolicy target) {what}", cause)
        return None


def _describe(sqs: Any, role: str, url: str, region: str) -> QueueInfo:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    queue = QueueInfo(role, name, url, arn=_arn_from_url(url, region))
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    except AWS_FAILURES as exc:
        code, message = error_detail(exc)
        kind = category(exc)
        if kind is Category.NOT_FOUND:
            queue.exists = False
            queue.error = "does not exist"
            queue.cause = ErrorCode.QUEUE_NOT_FOUND
        elif kind is Category.ACCESS_DENIED:
            queue.refused = message or code
            queue.error = f"GetQueueAttributes refused ({code})"
        else:
            queue.error = f"GetQueueAttributes failed: {code}"
            queue.cause = ErrorCode.AWS_FAILED
        return queue
    queue.exists = queue.answered = True
    queue.arn = attributes.get("QueueArn") or queue.arn
    queue.kms_key = attributes.get("KmsMasterKeyId") or None
    queue.fifo = attributes.get("FifoQueue", "false").lower() == "true"
    if attributes.get("Policy"):
        try:
            queue.policy = _json_object(attributes["Policy"])
        except ValueError:
            queue.error = "its Policy attribute is not a JSON object"
    if attributes.get("RedrivePolicy"):
        try:
            queue.redrive_target = _json_object(attributes["RedrivePolicy"]).get(
                "deadLetterTargetArn"
            )
        except ValueError:
            queue.error = "its RedrivePolicy attribute is not a JSON object"
    return queue


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


# --------------------------------------------------------------------------- identity side


class _IdentitySide:
    """The caller's own permissions, from iam:SimulatePrincipalPolicy where that may be asked.

    An assumed role is simulated as the role (iam:GetRole finds its ARN with its path); the
    account root and federated users cannot be simulated. When the simulator is refused or not
    implemented (moto), every answer is `unknown`, and it is not asked again.
    """

    def __init__(self, aws: AwsClients, caller: Caller) -> None:
        self._aws = aws
        self.source: str = "iam:SimulatePrincipalPolicy"
        principal = self._principal(caller)
        self.caller = Caller(caller.account, caller.arn, caller.user_id, principal)

    def _unknown(self, reason: str) -> None:
        self.source = f"{UNKNOWN}: {reason}"

    def _principal(self, caller: Caller) -> str | None:
        if caller.arn.endswith(":root"):
            self._unknown("the account root user cannot be simulated")
            return None
        if ":federated-user/" in caller.arn:
            self._unknown("a federated user cannot be simulated")
            return None
        assumed = _ASSUMED_ROLE_RE.match(caller.arn)
        if not assumed:
            return caller.arn
        role_name = assumed.group(1)
        try:
            role = self._aws.client("iam").get_role(RoleName=role_name)
        except AWS_FAILURES as exc:
            code, _ = error_detail(exc)
            # Without its path the role's ARN is a guess; simulating a guess would only
            # report the guess, so the identity side stays unknown.
            self._unknown(f"iam:GetRole for {role_name} failed ({code})")
            return None
        return str(role["Role"]["Arn"])

    def decisions(self, queue_arn: str) -> dict[str, Decision | str]:
        principal = self.caller.principal
        if principal is None or self.source != "iam:SimulatePrincipalPolicy":
            return dict.fromkeys(SQS_ACTIONS, UNKNOWN)
        try:
            results = self._simulate(principal, queue_arn)
        except (*AWS_FAILURES, NotImplementedError) as exc:
            # moto: NotImplementedError in-process, ResponseParserError over its server;
            # AWS: AccessDenied when the caller may not use the simulator.
            if isinstance(exc, NotImplementedError):
                code = "not implemented"
            else:
                code, _ = error_detail(exc)
            self._unknown(f"iam:SimulatePrincipalPolicy unavailable ({code})")
            return dict.fromkeys(SQS_ACTIONS, UNKNOWN)
        answers: dict[str, Decision | str] = dict.fromkeys(SQS_ACTIONS, UNKNOWN)
        for result in results:
            action = _canonical_action(str(result.get("EvalActionName", "")))
            if action:
                answers[action] = _simulated_decision(result, queue_arn)
        return answers

    def _simulate(self, principal: str, queue_arn: str) -> list[dict[str, Any]]:
        iam = self._aws.client("iam")
        results: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "PolicySourceArn": principal,
            "ActionNames": list(SQS_ACTIONS),
            "ResourceArns": [queue_arn],
        }
        while True:
            page = iam.simulate_principal_policy(**kwargs)
            results.extend(page.get("EvaluationResults", []))
            if not page.get("IsTruncated") or not page.get("Marker"):
                return results
            kwargs["Marker"] = page["Marker"]


def _canonical_action(name: str) -> str | None:
    lowered = name.lower()
    return next((a for a in SQS_ACTIONS if a.lower() == lowered), None)


def _simulated_decision(result: Mapping[str, Any], queue_arn: str) -> Decision:
    decision = str(result.get("EvalDecision", ""))
    matched = result.get("MatchedStatements", [])
    missing = list(result.get("MissingContextValues", []))
    for specific in result.get("ResourceSpecificResults", []):
        if specific.get("EvalResourceName") == queue_arn:
            decision = str(specific.get("EvalResourceDecision", decision))
            matched = specific.get("MatchedStatements", matched)
            missing = list(specific.get("MissingContextValues", missing))
    names = list(dict.fromkeys(f"identity:{m.get('SourcePolicyId') or 'policy'}" for m in matched))
    verdict = _SIM_DECISIONS.get(decision.lower(), INDETERMINATE)
    if missing:
        # The simulator takes a missing key as absent; here an unknown key is never assumed
        # absent (DESIGN.md), so the answer depends on it.
        return Decision(INDETERMINATE, names, sorted(set(missing)))
    return Decision(verdict, names)


# --------------------------------------------------------------------------- rows


def _known_context(aws: AwsClients, caller: Caller) -> dict[str, ContextValue]:
    """The request context keys this check knows for the worker's own requests."""
    context: dict[str, ContextValue] = {
        "aws:PrincipalAccount": caller.account,
        "aws:userid": caller.user_id,
        "aws:SecureTransport": "true" if aws.secure_transport else "false",
        "aws:RequestedRegion": aws.region,
    }
    if caller.principal:
        context["aws:PrincipalArn"] = caller.principal
    return context


def _row(
    queue: QueueInfo,
    action: str,
    caller: Caller,
    identity_sides: Mapping[str, Decision | str],
    context: Mapping[str, ContextValue],
) -> PermissionRow:
    assert queue.arn is not None
    notes: list[str] = []
    request = Request(caller.arn, action, queue.arn, dict(context))
    identity: SideInput = identity_sides[action]
    resource: SideInput = queue.policy
    # A refused GetQueueAttributes or an unreadable Policy attribute: the policy is unknown.
    policy_unknown = queue.refused is not None or queue.error is not None
    if policy_unknown:
        resource = INDETERMINATE
    try:
        judged = evaluate_access(
            request,
            identity=identity,
            resource_policy=resource,
            resource_account=account_of(queue.arn),
        )
    except PolicyError as exc:
        notes.append(f"queue policy not understood: {exc}")
        policy_unknown = True
        judged = evaluate_access(
            request,
            identity=identity,
            resource_policy=INDETERMINATE,
            resource_account=account_of(queue.arn),
        )
    queue_policy = UNKNOWN if policy_unknown else judged.resource
    decision, statements = judged.decision, list(judged.statements)
    if queue.refused is not None and action == "sqs:GetQueueAttributes":
        # Not a guess: AWS refused this very call.
        explicit = "explicit deny" in queue.refused.lower()
        decision, statements = (EXPLICIT_DENY if explicit else IMPLICIT_DENY), []
        notes.append(f"AWS refused GetQueueAttributes: {queue.refused}")
    elif queue.refused is not None:
        notes.append("queue policy unreadable (GetQueueAttributes refused)")
    if queue.policy is None and not policy_unknown:
        notes.append(
            "no queue policy: the identity side must allow"
            if judged.same_account is not False
            else "no queue policy: another account's caller is denied"
        )
    delegated = (
        judged.same_account is True
        and queue_policy == IMPLICIT_DENY
        and queue.policy is not None
        and _grants_alone(queue.policy, request)
    )
    if delegated:
        notes.append(
            f"the queue policy grants {action} to the account {caller.account}, which within "
            "the account leaves it to the caller's identity policies"
        )
    if decision in DENIED and queue_policy == IMPLICIT_DENY and queue.policy and not delegated:
        others = _grants_to_others(queue.policy, request)
        if others:
            notes.append(f"queue policy grants {action} only to other principals: {others}")
    if decision == INDETERMINATE and judged.missing_context:
        notes.append(f"depends on {', '.join(judged.missing_context)} (not known here)")
    if decision == INDETERMINATE and judged.identity == UNKNOWN:
        notes.append("identity side unknown")
    if queue.kms_key and action in KMS_ACTIONS:
        notes.append(f"KMS-encrypted ({queue.kms_key}): also needs {KMS_ACTIONS[action]}")
    return PermissionRow(
        queue.name,
        action,
        queue_policy,
        judged.identity,
        decision,
        statements,
        "; ".join(notes) or None,
    )


def _grants_alone(policy: Mapping[str, Any], request: Request) -> bool:
    """Whether the policy read on its own (an account principal matching every principal of
    its account) grants the request."""
    try:
        return evaluate(policy, request).decision == ALLOWED
    except PolicyError:
        return False


def _grants_to_others(policy: Mapping[str, Any], request: Request) -> str:
    """The Allow statements that would grant this action on this queue to some principal,
    only not to this caller: the usual reason a queue policy "does not include" a caller."""
    raw = policy.get("Statement", [])
    statements = [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    found: list[str] = []
    for number, statement in enumerate(statements, start=1):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        anyone = copy.deepcopy(statement)
        anyone.pop("NotPrincipal", None)
        anyone["Principal"] = "*"
        # The Version decides whether policy variables expand, so it goes along.
        alone = {"Version": policy.get("Version"), "Statement": [anyone]}
        try:
            outcome = evaluate(alone, request).decision
        except PolicyError:
            continue
        if outcome == IMPLICIT_DENY:
            continue
        sid = statement.get("Sid")
        name = f"resource:{sid if isinstance(sid, str) and sid else f'#{number}'}"
        principal = statement.get("Principal", statement.get("NotPrincipal"))
        found.append(f"{name} ({_describe_principal(principal)})")
    return ", ".join(found)


def _describe_principal(spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(spec)
    values: list[str] = []
    for raw in spec.values():
        values.extend(raw if isinstance(raw, list) else [raw])
    return ", ".join(str(v) for v in values)
