"""SigV4: the SQS wire's signer must sign exactly as botocore's SigV4Auth signs the same
request at the same instant, and never show the secret or the signing key."""

from __future__ import annotations

import calendar
import datetime
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from raasctl.sigv4 import SigV4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
INSTANT = datetime.datetime(2026, 12, 2, 23, 59, 58)


def botocore_headers(
    url: str, headers: dict[str, str], body: bytes, credentials: Any, when: datetime.datetime
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(credentials, "sqs", "eu-west-1").add_auth(request)
    return dict(request.headers.items())


def epoch(when: datetime.datetime) -> float:
    return float(calendar.timegm(when.timetuple()))


@pytest.mark.parametrize(
    "url",
    [
        "https://sqs.eu-west-1.amazonaws.com/",
        "https://sqs.eu-west-1.amazonaws.com:443/",
        "http://127.0.0.1:4566/",
        "http://LocalHost:9324/some/path",
        "http://[::1]:4566/",
        "https://vpce-1a2b.sqs.eu-west-1.vpce.amazonaws.com/?b=2&a=1",
    ],
)
@pytest.mark.parametrize("token", [TOKEN, None])
def test_it_signs_as_botocore_signs(url: str, token: str | None) -> None:
    credentials = Credentials("AKIDEXAMPLE", SECRET, token).get_frozen_credentials()
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "AmazonSQS.ReceiveMessage",
        "x-amzn-query-mode": "true",
        "X-Spaced": "  two   words ",
    }
    for body in (b"", b'{"QueueUrl":"q","MaxNumberOfMessages":10}', "é ☃".encode()):
        expected = botocore_headers(url, headers, body, credentials, INSTANT)
        signed = SigV4(url, "eu-west-1", "sqs").sign(credentials, headers, body, now=epoch(INSTANT))
        assert signed == {name: expected[name] for name in signed}
        assert set(expected) - set(headers) == set(signed)


def test_a_new_day_or_new_credentials_get_a_new_signing_key() -> None:
    url, headers, body = "https://sqs.eu-west-1.amazonaws.com/", {"X-Amz-Target": "t"}, b"{}"
    signer = SigV4(url, "eu-west-1", "sqs")
    first = Credentials("AKIDEXAMPLE", SECRET).get_frozen_credentials()
    rotated = Credentials("AKIDEXAMPLE", SECRET[::-1]).get_frozen_credentials()
    next_day = INSTANT + datetime.timedelta(seconds=3)  # past midnight
    for credentials, when in [(first, INSTANT), (first, next_day), (rotated, next_day)]:
        expected = botocore_headers(url, headers, body, credentials, when)
        signed = signer.sign(credentials, headers, body, now=epoch(when))
        assert signed["Authorization"] == expected["Authorization"]


def test_neither_the_secret_nor_the_signing_key_shows() -> None:
    signer = SigV4("https://sqs.eu-west-1.amazonaws.com/", "eu-west-1", "sqs")
    credentials = Credentials("AKIDEXAMPLE", SECRET, TOKEN).get_frozen_credentials()
    signed = signer.sign(credentials, {}, b"{}")
    shown = repr(signer) + str(signer) + repr(signed)
    assert SECRET not in shown and SECRET[:12] not in shown
    assert signer._key[3].hex() not in shown and repr(signer._key[3]) not in shown
