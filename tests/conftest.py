"""Every test runs isolated: its own working directory, no real AWS account or home folder,
no RAASCTL_* or proxy settings from the developer's shell."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from support import patch_moto

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Every test meets the same moto, whatever ran before it in the process.
    patch_moto()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        # (proxies too: a test that wants one names its own)
        aws_or_ours = name.startswith(("AWS_", "RAASCTL_")) or name == "SSM_ENVIRONMENT_PREFIX"
        if aws_or_ours or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # moto's recommended fake credentials; tests about credentials replace them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # boto3's default session caches the credentials it resolved: a test must not inherit
    # another test's.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("RAASCTL_STATE_DIR", str(work / ".raasctl"))
    monkeypatch.chdir(work)
    yield work


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def moto_url() -> Iterator[str]:
    """moto's server (ThreadedMotoServer) on 127.0.0.1, for the length of a test: its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
