"""Benchmark: CPU to sign one of the worker's SQS requests, raasctl's signer against botocore's.

    .venv/bin/python benchmarks/sigv4_cpu.py [--requests N]

Both sign the same ReceiveMessage request (POST, JSON body, the wire's headers, a session
token) N times in this process; printed: µs of CPU a request for each and their ratio, and
whether the two Authorization headers agree for one instant. Target: raasctl's signer at most
a fifth of botocore's CPU. Ratios within one run compare well; absolute figures depend on
the machine.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import json
import time
from collections.abc import Callable
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from raasctl.sigv4 import SigV4

URL = "https://sqs.eu-west-1.amazonaws.com/"
HEADERS = {
    "Content-Type": "application/x-amz-json-1.0",
    "X-Amz-Target": "AmazonSQS.ReceiveMessage",
    "x-amzn-query-mode": "true",
}
BODY = json.dumps(
    {
        "QueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/deposits",
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 20,
        "VisibilityTimeout": 60,
        "MessageAttributeNames": ["All"],
        "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
    },
    separators=(",", ":"),
).encode()
CREDENTIALS = Credentials(
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLE"
).get_frozen_credentials()


def botocore_sign() -> str:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers=HEADERS)
    SigV4Auth(CREDENTIALS, "sqs", "eu-west-1").add_auth(request)
    return str(request.headers["Authorization"])


def cpu_us(sign: Callable[[], str], requests: int) -> float:
    began = time.process_time()
    for _ in range(requests):
        sign()
    return (time.process_time() - began) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    signer = SigV4(URL, "eu-west-1", "sqs")

    def raasctl_sign() -> str:
        return signer.sign(CREDENTIALS, HEADERS, BODY)["Authorization"]

    instant = datetime.datetime(2026, 12, 2, 12, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=instant):
        expected = botocore_sign()
    same = (
        signer.sign(CREDENTIALS, HEADERS, BODY, now=calendar.timegm(instant.timetuple()))[
            "Authorization"
        ]
        == expected
    )
    theirs = cpu_us(botocore_sign, args.requests)
    ours = cpu_us(raasctl_sign, args.requests)
    ok = same and ours <= theirs / 5
    print(f"botocore SigV4Auth.add_auth   {theirs:7.1f} µs CPU a request")
    print(f"raasctl SigV4.sign            {ours:7.1f} µs CPU a request   {ours / theirs:.2f}×")
    print(f"same Authorization header: {same}   target <= 0.20×   {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
