"""The protected-environment guard holds for programmatic callers, not only for the CLI:
the mock enqueue and the queue purge/redrive refuse a protected environment themselves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from raasctl.codes import ErrorCode
from raasctl.config import Config, EnvironmentConfig, load_config
from raasctl.errors import ConfigError
from raasctl.protection import ProtectedEnvironment, protection, refuse_protected
from raasctl.queue_admin import purge_queue, queue_status, redrive_queue
from raasctl.queues.base import OutgoingMessage
from raasctl.runner import enqueue_mock
from raasctl.runtime import Runtime

DEPOSITS = 10  # entries in fixtures/client_deposits.json


@pytest.fixture
def prod() -> Iterator[Runtime]:
    """A protected environment with an embedded queue: 2 messages queued, 1 dead-lettered."""
    Path("raasctl.yaml").write_text(
        "default_env: prod\n"
        "environments:\n"
        "  prod:\n"
        "    protected: true\n"
        "    queue: {kind: sqlite}\n",
        encoding="utf-8",
    )
    config = load_config().config
    name, env = config.environment(None)
    runtime = Runtime(config, name, env)
    queue = runtime.queue()
    queue.send_batch(
        [
            OutgoingMessage(
                json.dumps({"v": 1, "cron": "clientDepositUpdate", "key": f"k{n}"}),
                group_id=f"D-{n}",
                dedup_id=f"k{n}",
            )
            for n in range(3)
        ]
    )
    [got] = queue.receive(1, 0)
    queue.dead_letter(got, "permanent")
    queue.close()
    yield runtime


def depth(runtime: Runtime) -> tuple[int, int | None]:
    found = queue_status(runtime).depth
    return found.visible, found.dlq_visible


def runtime_of(config: Config, name: str) -> Runtime:
    return Runtime(config, name, config.environments[name])


def test_the_guard_refuses_only_a_protected_environment_without_the_flag() -> None:
    config = Config(
        default_env="dev",
        environments={"dev": EnvironmentConfig(), "prod": EnvironmentConfig(protected=True)},
    )
    refuse_protected(runtime_of(config, "dev"), "queue purge", allow_protected=False)
    refuse_protected(runtime_of(config, "prod"), "queue purge", allow_protected=True)
    with pytest.raises(ProtectedEnvironment) as refused:
        refuse_protected(runtime_of(config, "prod"), "queue purge", allow_protected=False)
    assert isinstance(refused.value, ConfigError) and refused.value.exit_code == 2
    assert refused.value.code == ErrorCode.PROTECTED_ENV
    assert "prod" in refused.value.message and "queue purge" in refused.value.message


PROD_URL = "https://sqs.us-east-1.amazonaws.com/111122223333/raas-cron-jobs-prod.fifo"


@pytest.mark.parametrize(
    ("alias_queue", "shared"),
    [
        ({"kind": "sqs", "url": PROD_URL}, True),
        ({"kind": "sqs", "url": PROD_URL + "/"}, True),
        ({"kind": "sqs", "url": PROD_URL.replace("prod", "staging")}, False),
    ],
)
def test_protection_follows_the_queue_not_the_name(alias_queue: dict, shared: bool) -> None:
    config = Config.model_validate(
        {
            "default_env": "prod",
            "environments": {
                "prod": {
                    "protected": True,
                    "deployed": True,
                    "queue": {"kind": "sqs", "url": PROD_URL},
                },
                "alias": {"queue": alias_queue},
            },
        }
    )
    alias = runtime_of(config, "alias")
    assert (protection(config, "alias", alias.env) is not None) is shared
    if shared:
        with pytest.raises(
            ProtectedEnvironment, match="uses the queue of protected environment prod"
        ):
            refuse_protected(alias, "queue purge", allow_protected=False)
    else:
        refuse_protected(alias, "queue purge", allow_protected=False)


def test_two_environments_on_one_sqlite_file_share_its_protection(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    config = Config.model_validate(
        {
            "default_env": "prod",
            "environments": {
                "prod": {
                    "protected": True,
                    "deployed": True,
                    "queue": {"kind": "sqlite", "path": str(db)},
                },
                "copy": {"queue": {"kind": "sqlite", "path": str(tmp_path / "." / "prod.db")}},
                "other": {"queue": {"kind": "sqlite"}},
            },
        }
    )
    assert protection(config, "copy", config.environments["copy"]) is not None
    assert protection(config, "other", config.environments["other"]) is None


def test_a_programmatic_mock_enqueue_is_refused_on_a_protected_environment(
    prod: Runtime,
) -> None:
    before = depth(prod)
    with pytest.raises(ProtectedEnvironment) as refused:
        enqueue_mock(prod, "clientDepositUpdate", copies=2)
    assert refused.value.code == ErrorCode.PROTECTED_ENV
    assert "enqueue-mock" in refused.value.message
    assert depth(prod) == before
    state = prod.state()
    try:
        assert state.list_runs() == []  # not even a run record
    finally:
        state.close()


def test_a_programmatic_mock_enqueue_is_allowed_with_allow_protected(prod: Runtime) -> None:
    visible, _ = depth(prod)
    summary = enqueue_mock(prod, "clientDepositUpdate", copies=2, allow_protected=True)
    assert summary.enqueued == 2 * DEPOSITS
    assert depth(prod)[0] == visible + 2 * DEPOSITS


def test_programmatic_purge_and_redrive_are_refused_on_a_protected_environment(
    prod: Runtime,
) -> None:
    for operation, call in (
        ("queue purge", lambda: purge_queue(prod)),
        ("queue purge", lambda: purge_queue(prod, dlq=True)),
        ("queue redrive", lambda: redrive_queue(prod)),
    ):
        with pytest.raises(ProtectedEnvironment) as refused:
            call()
        assert operation in refused.value.message
    assert depth(prod) == (2, 1)  # nothing deleted, nothing moved


def test_programmatic_purge_and_redrive_are_allowed_with_allow_protected(prod: Runtime) -> None:
    moved = redrive_queue(prod, allow_protected=True)
    assert moved.moved == 1 and moved.env == "prod"
    assert depth(prod) == (3, 0)
    purged = purge_queue(prod, allow_protected=True)
    # freed_bytes (issue 16) is new beside the original keys; the rest is as it was.
    shown = purged.as_dict()
    assert isinstance(shown.pop("freed_bytes"), int)
    assert shown == {"env": "prod", "dlq": False, "purged": 3}
    assert depth(prod) == (0, 0)


def test_an_unprotected_environment_needs_no_flag() -> None:
    config = load_config().config  # the built-in local environment
    name, env = config.environment(None)
    runtime = Runtime(config, name, env)
    summary = enqueue_mock(runtime, "clientDepositUpdate")
    assert summary.enqueued == DEPOSITS
    assert purge_queue(runtime).purged == DEPOSITS
