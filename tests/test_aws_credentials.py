"""The credential rules every AWS call follows (raasctl/aws.py), through the command line.

A recording HTTP server on 127.0.0.1 stands in for AWS where a test must prove that no
request was sent; moto stands in where a call must succeed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from raasctl.aws import AwsClients, key_kind
from raasctl.cli import main
from raasctl.config import AwsConfig
from raasctl.errors import ConfigError

SECRET_KEY = "s3cr3t-access-key-never-shown"
SESSION_TOKEN = "session-token-never-shown"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/raas-uat"


class Recorder(ThreadingHTTPServer):
    """Answers every request with 403 AccessDenied (botocore does not retry that) and keeps
    each request's body, so a test can tell whether, and what, a client sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.bodies: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.bodies.append(self.rfile.read(length).decode("utf-8", "replace"))
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            b"<Message>recorded</Message></Error></ErrorResponse>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_config(text: str) -> None:
    Path("raasctl.yaml").write_text(text, encoding="utf-8")


def uat_config(
    *, endpoint_url: str | None = None, profile: str | None = None, queue_url: str = QUEUE_URL
) -> str:
    aws = {"region": "us-east-1", "endpoint_url": endpoint_url, "profile": profile}
    return (
        "environments:\n"
        "  local: {}\n"
        "  uat:\n"
        "    deployed: true\n"
        f"    aws: {json.dumps(aws)}\n"
        f"    queue: {{kind: sqs, url: {queue_url}}}\n"
    )


def credentials_file() -> Path:
    import os

    return Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])


def write_profile(name: str, access_key: str, secret_key: str, token: str | None = None) -> None:
    lines = [
        f"[{name}]",
        f"aws_access_key_id = {access_key}",
        f"aws_secret_access_key = {secret_key}",
    ]
    if token:
        lines.append(f"aws_session_token = {token}")
    with credentials_file().open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


def test_key_kind_tells_long_term_from_temporary() -> None:
    assert key_kind("AKIAIOSFODNN7EXAMPLE") == "long-term"
    assert key_kind("ASIAIOSFODNN7EXAMPLE") == "temporary"
    assert key_kind("testing") is None


# --------------------------------------------------------------------------- ASIA rule


def test_asia_key_without_token_is_refused_before_any_request(
    runner: CliRunner, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(uat_config(endpoint_url=recorder.url))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    refused = runner.invoke(main, ["--env", "uat", "access", "check"])

    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "RAAS_CREDENTIALS_INVALID" in refused.stderr
    assert "AWS_SESSION_TOKEN" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert recorder.bodies == []  # not one request left the process

    # The same command with the token does reach the endpoint: the recorder would have seen
    # a request had the rule not stopped it.
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    allowed = runner.invoke(main, ["--env", "uat", "access", "check", "--format", "json"])
    assert any("Action=GetCallerIdentity" in body for body in recorder.bodies)
    # The recorder refuses GetCallerIdentity: a failed AWS call exits 1, as in every command.
    assert allowed.exit_code == 1
    report = json.loads(allowed.stdout)[0]
    assert report["credentials"]["key_kind"] == "temporary"
    assert report["credentials"]["session_token"] is True
    for output in (refused.stdout, refused.stderr, allowed.stdout, allowed.stderr):
        assert SECRET_KEY not in output
        assert SESSION_TOKEN not in output


def test_asia_key_in_a_profile_without_token_names_the_profile(
    runner: CliRunner, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profile("dev", "ASIAIOSFODNN7EXAMPLE", SECRET_KEY)
    write_config(uat_config(endpoint_url=recorder.url, profile="dev"))

    result = runner.invoke(main, ["--env", "uat", "access", "check"])

    assert result.exit_code == 2
    assert "aws_session_token" in result.stderr
    assert "'dev'" in result.stderr
    assert recorder.bodies == []


def test_asia_rule_guards_every_client_not_only_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAIOSFODNN7EXAMPLE")
    aws = AwsClients("uat", AwsConfig())
    with pytest.raises(ConfigError) as raised:
        aws.client("sqs")
    assert raised.value.exit_code == 2
    assert "AWS_SESSION_TOKEN" in raised.value.message


def test_deferred_assume_role_is_described_without_calling_sts(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    write_profile("dev", "AKIAIOSFODNN7EXAMPLE", SECRET_KEY)
    Path(os.environ["AWS_CONFIG_FILE"]).write_text(
        "[profile worker]\n"
        "role_arn = arn:aws:iam::123456789012:role/raas-worker\n"
        "source_profile = dev\n",
        encoding="utf-8",
    )
    # The assume-role provider's own STS client goes to the recorder too.
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", recorder.url)
    aws = AwsClients("uat", AwsConfig(profile="worker", endpoint_url=recorder.url))

    info = aws.credential_info()

    assert (info.source, info.key_kind, info.session_token) == ("assume-role", "temporary", True)
    assert info.profile == "worker"
    assert recorder.bodies == []
    # Control: the first real call fetches the role's credentials from STS.
    with pytest.raises(Exception):  # noqa: B017 - the recorder's 403, whichever class wraps it
        aws.client("sts").get_caller_identity()
    assert any("Action=AssumeRole" in body for body in recorder.bodies)


# --------------------------------------------------------------------------- profiles


@pytest.fixture
def moto_with_dev_user() -> Iterator[str]:
    """moto, an SQS queue, and an IAM user whose keys are the developer's profile `dev`."""
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_user(UserName="dev-alice")
        key = iam.create_access_key(UserName="dev-alice")["AccessKey"]
        write_profile("dev", key["AccessKeyId"], key["SecretAccessKey"])
        queue_url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="raas-uat")[
            "QueueUrl"
        ]
        yield queue_url


def test_developer_profile_is_used_on_a_developer_machine(
    runner: CliRunner, moto_with_dev_user: str
) -> None:
    write_config(uat_config(profile="dev", queue_url=moto_with_dev_user))

    result = runner.invoke(main, ["--env", "uat", "access", "check", "--format", "json"])

    report = json.loads(result.stdout)[0]
    assert report["credentials"]["source"] == "shared-credentials-file"
    assert report["credentials"]["profile"] == "dev"
    assert report["credentials"]["profile_ignored"] is False
    # The call was signed with the profile's key, not with the environment's.
    assert report["caller"]["arn"] == "arn:aws:iam::123456789012:user/dev-alice"
    assert "RAAS_CREDENTIALS_DEFAULT_CHAIN" not in result.stderr


def test_developer_profile_is_ignored_on_a_deployed_machine(
    runner: CliRunner, moto_with_dev_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(uat_config(profile="dev", queue_url=moto_with_dev_user))
    monkeypatch.setenv("SSM_ENVIRONMENT_PREFIX", "/work-uat")

    result = runner.invoke(main, ["--env", "uat", "access", "check", "--format", "json"])

    report = json.loads(result.stdout)[0]
    assert report["credentials"]["profile_ignored"] is True
    assert report["credentials"]["source"] == "env"  # the default chain
    assert report["caller"]["arn"] != "arn:aws:iam::123456789012:user/dev-alice"
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    chain = [line for line in logged if line["code"] == "RAAS_CREDENTIALS_DEFAULT_CHAIN"]
    assert len(chain) == 1
    assert chain[0]["profile"] == "dev"
    assert chain[0]["env"] == "uat"


def test_missing_profile_is_a_configuration_error(runner: CliRunner) -> None:
    write_config(uat_config(profile="nobody"))

    result = runner.invoke(main, ["--env", "uat", "access", "check"])

    assert result.exit_code == 2
    assert "RAAS_CREDENTIALS_MISSING" in result.stderr
    assert "'nobody'" in result.stderr


def test_no_credentials_at_all_is_reported_without_a_call(
    runner: CliRunner, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    write_config(uat_config(endpoint_url=recorder.url))

    result = runner.invoke(main, ["--env", "uat", "access", "check", "--format", "json"])

    # Missing credentials are a configuration error (2) in every command.
    assert result.exit_code == 2
    report = json.loads(result.stdout)[0]
    assert report["credentials"]["source"] is None
    assert "no AWS credentials found" in report["errors"][0]
    assert recorder.bodies == []
