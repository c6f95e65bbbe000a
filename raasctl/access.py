"""Who may do what to an environment's queues: `access check` and `access explain`.

`check_environment` reads, and never changes, what AWS already knows: the credentials botocore
resolved, the caller (STS GetCallerIdentity), each queue's attributes (GetQueueAttributes:
its policy, KMS key and DLQ), and the caller's identity policies as far as the IAM policy
simulator may be asked. It never sends, receives or deletes a message to find out. Each
(queue, action) pair gets a decision from the offline evaluator (raasctl.policy), which names
the statements that decided it.

`explain` is the evaluator on its own: it judges only the policy it is given.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from raasctl.aws import LONG_TERM, AwsClients, CredentialInfo
from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import EnvironmentConfig, SqsQueueConfig
from raasctl.errors import ConfigError, UsageError
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
    load_policy,
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
EMBEDDED_NOTE = "embedded: no AWS access needed"
DENIED = frozenset({EXPLICIT_DENY, IMPLICIT_DENY})

_NOT_FOUND_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_SIM_DECISIONS = {
    "allowed": ALLOWED,
    "explicitdeny": EXPLICIT_DENY,
    "implicitdeny": IMPLICIT_DENY,
}
# What a failed call raises: an error answer, a transport failure, or an answer botocore
# cannot parse (ResponseParserError is not a BotoCoreError).
_AWS_FAILURES = (ClientError, BotoCoreError, ResponseParserError)
_XML_ERROR_RE = re.compile(r"<Code>([^<]*)</Code>\s*<Message>([^<]*)</Message>")
_ASSUMED_ROLE_RE = re.compile(r"^arn:[^:]+:sts::\d{12}:assumed-role/([^/]+)/.+$")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Caller:
    account: str
    arn: str  # as STS reports it: a session ARN for an assumed role
    user_id: str
    principal: str | None = None  # the IAM user or role behind it, for the simulator

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "arn": self.arn,
            "user_id": self.user_id,
            "principal": self.principal,
        }


@dataclass
class QueueInfo:
    role: str  # "queue" or "dlq"
    name: str
    url: str | None
    arn: str | None = None
    exists: bool | None = None  # None: AWS did not say (the call was refused or failed)
    answered: bool = False  # GetQueueAttributes answered
    error: str | None = None
    refused: str | None = None  # the AccessDenied message, when GetQueueAttributes was refused
    policy: dict[str, Any] | None = None
    kms_key: str | None = None
    fifo: bool | None = None
    redrive_target: str | None = None  # the DLQ ARN of the queue's RedrivePolicy

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "url": self.url,
            "arn": self.arn,
            "exists": self.exists,
            "answered": self.answered,
            "error": self.error,
            "policy": self.policy is not None,
            "kms_key": self.kms_key,
            "fifo": self.fifo,
        }


@dataclass(frozen=True)
class PermissionRow:
    queue: str
    action: str
    queue_policy: str  # the queue policy's own decision, or "unknown"
    identity: str  # the identity side's decision, or "unknown"
    decision: str  # both sides combined (same-account / cross-account rule)
    statements: list[str]
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "action": self.action,
            "queue_policy": self.queue_policy,
            "identity": self.identity,
            "decision": self.decision,
            "statements": list(self.statements),
            "note": self.note,
        }


@dataclass
class EnvReport:
    env: str
    deployed: bool = False
    embedded: bool = False
    credentials: CredentialInfo | None = None
    caller: Caller | None = None
    identity_source: str | None = None  # how the identity side was judged, or why it is unknown
    queues: list[QueueInfo] = field(default_factory=list)
    permissions: list[PermissionRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """embedded, error, denied, indeterminate or ok (the worst wins)."""
        if self.embedded:
            return "embedded"
        if self.errors:
            return "error"
        decisions = {row.decision for row in self.permissions}
        if decisions & DENIED:
            return "denied"
        if INDETERMINATE in decisions:
            return "indeterminate"
        return "ok"

    def failed(self, strict: bool) -> bool:
        return self.status in ("error", "denied") or (strict and self.status == INDETERMINATE)

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "status": self.status,
            "note": EMBEDDED_NOTE if self.embedded else None,
            "deployed": self.deployed,
            "credentials": self.credentials.to_json() if self.credentials else None,
            "caller": self.caller.to_json() if self.caller else None,
            "identity_source": self.identity_source,
            "queues": [queue.to_json() for queue in self.queues],
            "permissions": [row.to_json() for row in self.permissions],
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


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
        report.errors.append(
            "no AWS credentials found (set a profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run on a machine with a role)"
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


def _client_error(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code") or "error"), str(error.get("Message") or "")
        # An XML error body boto3 could not parse (moto's SQS under IAM auth) carries both.
        inner = _XML_ERROR_RE.search(message)
        if inner:
            return inner.group(1), inner.group(2)
        return code, message
    return type(exc).__name__, str(exc)


def _is_access_denied(code: str) -> bool:
    # Under IAM auth moto answers SQS in XML that boto3 reads as the code "403".
    return "AccessDenied" in code or code in ("403", "AuthorizationError", "UnauthorizedOperation")


def _caller(aws: AwsClients, report: EnvReport) -> Caller | None:
    try:
        found = aws.client("sts").get_caller_identity()
    except _AWS_FAILURES as exc:
        code, message = _client_error(exc)
        report.errors.append(f"STS GetCallerIdentity failed: {code}: {message}".rstrip(": "))
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
        report.errors.append(f"queue {main.name}: {main.error}")
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
        report.errors.append(f"DLQ {dlq.name}: {dlq.error}")
    if main.redrive_target and dlq.arn and dlq.arn != main.redrive_target:
        report.warnings.append(
            f"dlq_url {dlq_url} is not the queue's RedrivePolicy target {main.redrive_target}"
        )
    found.append(dlq)
    return found


def _dlq_url(sqs: Any, target_arn: str, report: EnvReport) -> str | None:
    parts = target_arn.split(":")
    if len(parts) != 6:
        report.errors.append(f"the queue's RedrivePolicy names {target_arn!r}, not a queue ARN")
        return None
    account, name = parts[4], parts[5]
    try:
        return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
    except _AWS_FAILURES as exc:
        code, _ = _client_error(exc)
        what = "does not exist" if code in _NOT_FOUND_CODES else f"GetQueueUrl failed: {code}"
        report.errors.append(f"DLQ {name} (the queue's RedrivePolicy target) {what}")
        return None


def _describe(sqs: Any, role: str, url: str, region: str) -> QueueInfo:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    queue = QueueInfo(role, name, url, arn=_arn_from_url(url, region))
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    except _AWS_FAILURES as exc:
        code, message = _client_error(exc)
        if code in _NOT_FOUND_CODES:
            queue.exists = False
            queue.error = "does not exist"
        elif _is_access_denied(code):
            queue.refused = message or code
            queue.error = f"GetQueueAttributes refused ({code})"
        else:
            queue.error = f"GetQueueAttributes failed: {code}"
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
        except _AWS_FAILURES as exc:
            code, _ = _client_error(exc)
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
        except (*_AWS_FAILURES, NotImplementedError) as exc:
            # moto: NotImplementedError in-process, ResponseParserError over its server;
            # AWS: AccessDenied when the caller may not use the simulator.
            if isinstance(exc, NotImplementedError):
                code = "not implemented"
            else:
                code, _ = _client_error(exc)
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
    if decision in DENIED and queue_policy == IMPLICIT_DENY and queue.policy is not None:
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


# --------------------------------------------------------------------------- explain


def parse_context(pairs: Sequence[str], absent: Sequence[str] = ()) -> dict[str, ContextValue]:
    """`KEY=VALUE` pairs; values repeated for one key (compared case-insensitively) form a
    list, a single value stays a string. Each key of ``absent`` is known to be absent from the
    request (value None); a key cannot be both given and absent."""
    collected: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--context {pair!r}: expected KEY=VALUE (e.g. aws:SourceVpce=vpce-1)")
        spelling.setdefault(key.lower(), key)
        collected.setdefault(key.lower(), []).append(value)
    context: dict[str, ContextValue] = {
        spelling[lowered]: values[0] if len(values) == 1 else values
        for lowered, values in collected.items()
    }
    for raw in absent:
        key = raw.strip()
        if not key or "=" in key:
            raise UsageError(f"--absent {raw!r}: expected a context key (e.g. aws:SourceVpce)")
        if key.lower() in collected:
            raise UsageError(f"{key} is given with --context and with --absent: choose one")
        if key.lower() not in spelling:
            spelling[key.lower()] = key
            context[key] = None
    return context


def _is_identity_policy(policy: Mapping[str, Any]) -> bool:
    """True when no statement has a Principal; a file mixing both kinds is an error."""
    raw = policy.get("Statement", [])
    statements = [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    with_principal = [
        isinstance(s, dict) and ("Principal" in s or "NotPrincipal" in s) for s in statements
    ]
    if any(with_principal) and not all(with_principal):
        raise PolicyError(
            "statements with and without Principal in one file: split identity and resource "
            "policies into separate files"
        )
    return bool(statements) and not any(with_principal)


def explain(
    policy_file: str | Path,
    principal: str,
    action: str,
    resource: str | None = None,
    context: Mapping[str, ContextValue] | None = None,
) -> Decision:
    """Judge one request against one policy file, as that policy alone would.

    A policy whose statements have no Principal is an identity policy (the principal is the
    one it is attached to). A file that cannot be read or evaluated raises ConfigError
    (exit 2) naming the file.
    """
    try:
        policy = load_policy(policy_file)
        request = Request(principal, action, resource, dict(context or {}))
        return evaluate(policy, request, identity=_is_identity_policy(policy))
    except PolicyError as exc:
        message = str(exc)
        if str(policy_file) not in message:
            message = f"policy file {policy_file}: {message}"
        raise ConfigError(message, code=ErrorCode.POLICY_INVALID) from None
