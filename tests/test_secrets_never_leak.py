"""No secret leaves the process, in any form, whole or in part.

Distinctive values are planted for every kind of secret (Workday password, OAuth client
secret and refresh token, the callback token, an AWS secret key and session token), and the
services echo them back in every way real ones have: a 401 or 500 page, an HTML "login" page,
a SOAP fault, an echoed form (URL-encoded), the Basic header's base64, text with its
whitespace collapsed, an error page that cuts the token off. Then every byte the tool wrote
is searched: stdout and stderr of every command, the SQLite files (queue, DLQ, run records)
and the DLQ's reasons. None may hold a secret in any registered form, or any six characters
of one in a row.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner
from workday_server import FakeWorkday, Reply

from raasctl.cli import main
from raasctl.config import PACKAGED_FIXTURES

USERNAME = "isu-leaktest@acme"
PASSWORD = "Pw Zq8#Kx2!vR7mN4"  # a space and characters that URL-encode
CLIENT_SECRET = "Cs-Hq93Lm/Xw7+Pz2"
REFRESH_TOKEN = "Rt-Vb5/Ns8+Qe2=Lk4&Jd"
CALLBACK_TOKEN = "Cb-Tk7Ww2Yy9Uu3Ii5Oo1X"  # 22 characters
AWS_SECRET = "AwsS3cr3tJd83nf02kd8Gh3Lq7"
AWS_SESSION = "AwsSessTok9Mz62Pq09Lx4Rt7Zc"
SECRETS = [PASSWORD, CLIENT_SECRET, REFRESH_TOKEN, CALLBACK_TOKEN, AWS_SECRET, AWS_SESSION]
BASIC = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()


def forms(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    }


class Seen:
    """Everything the tool wrote: command output, and the files of its state folder."""

    def __init__(self) -> None:
        self.outputs: list[str] = []

    def run(self, runner: CliRunner, *args: str) -> Any:
        result = runner.invoke(main, list(args))
        self.outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def haystack(self) -> bytes:
        data = "\n".join(self.outputs).encode()
        for path in Path(".raasctl").rglob("*"):
            if path.is_file():
                data += b"\n" + path.read_bytes()
        return data


def assert_nothing_leaked(seen: Seen) -> None:
    haystack = seen.haystack()
    for secret in SECRETS:
        for form in forms(secret):
            assert form.encode() not in haystack, f"a form of {secret[:3]}… leaked"
        for start in range(len(secret) - 5):
            piece = secret[start : start + 6]
            assert piece.encode() not in haystack, f"{piece!r} of {secret[:3]}… leaked"
    assert BASIC.encode() not in haystack


def write_config(env: dict[str, Any]) -> None:
    Path("raasctl.yaml").write_text(
        json.dumps({"default_env": "leak", "environments": {"leak": env}}), encoding="utf-8"
    )


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "WORKDAY_USER": USERNAME,
        "WORKDAY_PASSWORD": PASSWORD,
        "WORKDAY_CLIENT_ID": "raasctl-leak-client",
        "WORKDAY_CLIENT_SECRET": CLIENT_SECRET,
        "WORKDAY_REFRESH_TOKEN": REFRESH_TOKEN,
        "CALLBACK_TOKEN": CALLBACK_TOKEN,
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLELEAKTEST1",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_SESSION,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def workday(secrets_env: None) -> Iterator[FakeWorkday]:
    with FakeWorkday(
        username=USERNAME,
        password=PASSWORD,
        client_id="raasctl-leak-client",
        client_secret=CLIENT_SECRET,
        refresh_token=REFRESH_TOKEN,
    ) as fake:
        fake.add_report("Client_Deposits", [{"Deposit_ID": "D-1", "Deposit_Amount": "1.00"}])
        yield fake


def workday_source(fake: FakeWorkday, auth: str) -> dict[str, Any]:
    return {
        "kind": "workday",
        "base_url": fake.base_url,
        "tenant": fake.tenant,
        "owner": fake.owner,
        "auth": (
            {"kind": "basic", "username": "env:WORKDAY_USER", "password": "env:WORKDAY_PASSWORD"}
            if auth == "basic"
            else {
                "kind": "oauth",
                "client_id": "env:WORKDAY_CLIENT_ID",
                "client_secret": "env:WORKDAY_CLIENT_SECRET",
                "refresh_token": "env:WORKDAY_REFRESH_TOKEN",
            }
        ),
        "retries": 0,
        "read_timeout_s": 5,
    }


ECHOES = {
    "401 echoing the password and the Basic header": Reply(
        401, body=f"<html>Bad login for {USERNAME} / {PASSWORD} (Authorization: Basic {BASIC})"
    ),
    "500 echoing it with its whitespace collapsed": Reply(
        500, body="Internal error. Request had password=" + PASSWORD.replace(" ", "\n   ")
    ),
    "HTML 200 login page with the password URL-encoded": Reply(
        200,
        body=f"<html><form>pw={quote_plus(PASSWORD)}&next=%2Fccx</form></html>",
        content_type="text/html",
    ),
    "SOAP fault naming the password": Reply.fault(f"Invalid credentials: {PASSWORD}", 500),
    "redirect to a login page carrying the password": Reply(
        302, headers={"Location": f"/login?user={USERNAME}&pw={quote(PASSWORD, safe='')}"}
    ),
}


@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_workday_echoing_basic_credentials_leaks_nothing(
    runner: CliRunner, workday: FakeWorkday, echo: str
) -> None:
    write_config({"source": workday_source(workday, "basic")})
    workday.script(ECHOES[echo])
    seen = Seen()

    failed = seen.run(runner, "run", "clientDepositUpdate")
    seen.run(runner, "--format", "json", "runs", "list")
    seen.run(runner, "runs", "list")

    assert failed.exit_code == 1
    assert_nothing_leaked(seen)


def test_workday_echoing_the_oauth_form_leaks_nothing(
    runner: CliRunner, workday: FakeWorkday
) -> None:
    write_config({"source": workday_source(workday, "oauth")})
    form = f"grant_type=refresh_token&refresh_token={quote_plus(REFRESH_TOKEN)}"
    workday.script_token(
        Reply(
            400,
            body=f"invalid_grant for {form}&client_secret={quote_plus(CLIENT_SECRET)} "
            f"(raw {json.dumps(REFRESH_TOKEN)})",
            content_type="text/plain",
        )
    )
    seen = Seen()

    failed = seen.run(runner, "run", "clientDepositUpdate")
    seen.run(runner, "--format", "json", "runs", "list")

    assert failed.exit_code == 1 and "RAAS_AUTH_FAILED" in failed.stderr
    assert_nothing_leaked(seen)


class EchoingCallback(BaseHTTPRequestHandler):
    """A callback that answers 400 with the request's headers echoed: the token placed so
    that a cut at 200 characters would land inside it, or (`server_cut`) cut off by the
    server itself, 12 characters in."""

    server_cut = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        authorization = self.headers.get("Authorization", "")
        if self.server_cut:
            body = f"rejected: Authorization: {authorization[: len('Bearer ') + 12]}".encode()
        else:
            # 182 characters, then "Bearer " and the token: a cut at 200 lands 11 in.
            prefix = "rejected: " + "x" * 156 + " Authorization: "
            body = (prefix + authorization + " and more text").encode()
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.parametrize("server_cut", [False, True], ids=["we-cut", "server-cut"])
def test_a_callback_echoing_its_token_leaks_nothing_into_the_dlq_or_the_logs(
    runner: CliRunner, secrets_env: None, server_cut: bool
) -> None:
    handler = type("Handler", (EchoingCallback,), {"server_cut": server_cut})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        write_config(
            {
                "source": {"kind": "fixtures", "path": str(PACKAGED_FIXTURES / "raas")},
                "sink": {
                    "kind": "http",
                    "base_url": f"http://127.0.0.1:{server.server_address[1]}/cb",
                    "token": "env:CALLBACK_TOKEN",
                },
            }
        )
        seen = Seen()
        assert seen.run(runner, "run", "clientDepositUpdate").exit_code == 0
        drained = seen.run(runner, "--format", "json", "worker", "--until-empty")
        peek = seen.run(runner, "--format", "json", "queue", "peek", "--dlq", "--limit", "50")
        seen.run(runner, "--format", "json", "runs", "list")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    assert drained.exit_code == 3 and json.loads(drained.stdout)["dead_lettered"] > 0
    reasons = [m["attributes"]["reason"] for m in json.loads(peek.stdout)["messages"]]
    assert reasons and all("HTTP 400" in reason for reason in reasons)
    assert_nothing_leaked(seen)


class EchoingAws(BaseHTTPRequestHandler):
    """An AWS endpoint (or a proxy in front of one) that refuses every call and echoes the
    request's session token in its error message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("X-Amz-Security-Token", "")
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>Access denied for session token {token}</Message></Error>"
            "<RequestId>leak-test</RequestId></ErrorResponse>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_aws_failures_leak_no_secret_key_or_session_token(
    runner: CliRunner, secrets_env: None
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingAws)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        write_config(
            {
                "aws": {"region": "us-east-1", "endpoint_url": endpoint},
                "queue": {"kind": "sqs", "url": f"{endpoint}/111122223333/raas-leak.fifo"},
            }
        )
        seen = Seen()
        status = seen.run(runner, "queue", "status")
        seen.run(runner, "--format", "json", "queue", "status")
        seen.run(runner, "--format", "json", "access", "check")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    assert status.exit_code != 0 and "RAAS_ACCESS_DENIED" in status.stderr
    assert_nothing_leaked(seen)
