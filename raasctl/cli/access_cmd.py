"""`raasctl access check | explain | test`."""

from __future__ import annotations

import click

from raasctl.access import check_environment
from raasctl.access_report import DENIED, EnvReport, error_report, worst_exit
from raasctl.cli.access_render import check_table
from raasctl.cli.access_test_cmd import test_cmd
from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import emit
from raasctl.errors import RaasctlError, UsageError
from raasctl.explain import access_json, explain, explain_both, parse_context
from raasctl.logs import event, set_context
from raasctl.policy import INDETERMINATE

strict_option = click.option(
    "--strict", is_flag=True, help="An indeterminate answer fails too (exit 3)."
)


@click.group()
def access() -> None:
    """Check who may use each environment's queues, explain a decision, test policy suites.

    Example: raasctl access check --all-envs
    """


access.add_command(test_cmd)


@access.command("check")
@click.option(
    "--env", "env_name", metavar="ENV", help="Environment to check (default: the global --env)."
)
@click.option("--all-envs", is_flag=True, help="Check every environment of the config.")
@strict_option
@format_option
@pass_app
def check(app: AppContext, env_name: str | None, all_envs: bool, strict: bool) -> None:
    """Report the credentials, the caller and, per queue and SQS action, whether it is allowed.

    Reads only: STS GetCallerIdentity, SQS GetQueueAttributes/GetQueueUrl, IAM GetRole and
    SimulatePrincipalPolicy; it never sends, receives or deletes a message. Environments with
    an embedded (SQLite) queue need no AWS access and are only marked. With --all-envs every
    environment is reported, one that cannot be checked with its error. Exit 0 when
    everything is allowed; 3 when anything is denied or a queue is missing; 2 for missing or
    invalid credentials; 1 when an AWS call fails; the worst of them across environments. An
    indeterminate answer (unknown context or identity side) exits 0 unless --strict.

    Example: raasctl access check --all-envs --strict --format json
    """
    if env_name and all_envs:
        raise UsageError("--env and --all-envs exclude each other")
    if all_envs:
        names = list(app.loaded.config.environments)
    elif env_name:
        names = [env_name]
    else:
        names = [app.runtime.env_name]  # the global --env, RAASCTL_ENV or default_env
    reports: list[EnvReport] = []
    for name in names:
        try:
            runtime = app.runtime_for(name)
            set_context(env=runtime.env_name)
            reports.append(check_environment(runtime.env_name, runtime.env, runtime.aws))
        except RaasctlError as exc:
            if not all_envs:
                raise
            # One environment that cannot be checked does not hide the others.
            reports.append(error_report(name, exc.message, exc.code))
    for report in reports:
        for message, cause in zip(report.errors, report.causes, strict=False):
            event(cause, message, env=report.env)
    emit(app, [report.to_json() for report in reports], table=check_table(reports))
    code = worst_exit([report.exit_code(strict) for report in reports])
    if code:
        raise click.exceptions.Exit(code)


@access.command("explain")
@click.option("--policy", "policy_file", metavar="FILE", help="One policy JSON file, alone.")
@click.option(
    "--identity-policy", metavar="FILE", help="The principal's identity policy (JSON file)."
)
@click.option("--resource-policy", metavar="FILE", help="The queue's policy (JSON file).")
@click.option(
    "--principal",
    required=True,
    metavar="ARN",
    help="Who asks: an ARN, an account id or a service (sns.amazonaws.com).",
)
@click.option("--action", required=True, metavar="ACTION", help="e.g. sqs:SendMessage.")
@click.option("--resource", metavar="ARN", help="The resource asked for (a queue ARN).")
@click.option(
    "--context",
    "context_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A known request context value; repeat a key for a list. Keys not given are unknown.",
)
@click.option(
    "--absent",
    "absent_keys",
    multiple=True,
    metavar="KEY",
    help="A context key known to be absent from the request (for Null and ...IfExists).",
)
@strict_option
@format_option
@pass_app
def explain_cmd(
    app: AppContext,
    policy_file: str | None,
    identity_policy: str | None,
    resource_policy: str | None,
    principal: str,
    action: str,
    resource: str | None,
    context_pairs: tuple[str, ...],
    absent_keys: tuple[str, ...],
    strict: bool,
) -> None:
    """Judge a request offline: against one policy file alone (--policy), or against an
    identity policy and a queue policy combined (--identity-policy, --resource-policy).

    --policy: `allowed` means this policy grants the request (an account principal matches
    every principal of that account); a policy without Principal elements is read as an
    identity policy. With both sides the account rule of `access check` applies: within one
    account a queue policy naming the principal itself, or the identity policy, may grant (an
    account principal needs the identity side); across accounts both must; an explicit deny
    anywhere wins. aws:PrincipalArn, aws:PrincipalAccount and aws:username come from
    --principal unless given. Any other context key is unknown unless given with --context
    (its value) or --absent (not in the request); without --resource a statement scoped to
    particular queues leaves the answer indeterminate. Exit 0 when allowed, 3 when denied;
    indeterminate exits 0 unless --strict; an unknown action, a malformed principal or an
    invalid policy file exits 2.

    Example: raasctl access explain --policy queue-policy.json --principal
    arn:aws:iam::111122223333:role/raas-worker --action sqs:SendMessage --resource
    arn:aws:sqs:us-east-1:111122223333:raas-cron-jobs-work-uat.fifo --context
    aws:SourceVpce=vpce-0abc --absent aws:SourceArn
    """
    both = identity_policy is not None or resource_policy is not None
    if both == (policy_file is not None):
        raise UsageError("give --policy FILE, or --identity-policy and/or --resource-policy")
    context = parse_context(context_pairs, absent_keys)
    if policy_file is not None:
        decision = explain(policy_file, principal, action, resource, context)
        emit(app, decision.to_json())
    else:
        decision = explain_both(
            identity_policy, resource_policy, principal, action, resource, context
        )
        emit(app, access_json(decision))
    if decision.decision in DENIED or (strict and decision.decision == INDETERMINATE):
        raise click.exceptions.Exit(3)
