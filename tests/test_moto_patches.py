"""The tests' patches of moto (support.patch_moto) keep the services' behaviour: a cancelled
DynamoDB transaction leaves every item as it was, SQS still drops a message past its
retention period, receives at once never take one message (or one FIFO group) twice, and
deletes at once never bring a message back."""

from __future__ import annotations

import sys
import threading

import boto3
import pytest
from moto import mock_aws

from raasctl.state.dynamodb import create_table


def item(client: object, pk: str) -> dict[str, object] | None:
    found = client.get_item(TableName="t", Key={"pk": {"S": pk}, "sk": {"S": "x"}})  # type: ignore[attr-defined]
    return found.get("Item")


def test_a_cancelled_transaction_leaves_every_item_as_it_was() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        client.put_item(TableName="t", Item={"pk": {"S": "a"}, "sk": {"S": "x"}, "n": {"N": "1"}})
        client.put_item(TableName="t", Item={"pk": {"S": "c"}, "sk": {"S": "x"}, "n": {"N": "1"}})
        with pytest.raises(client.exceptions.TransactionCanceledException):
            client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}, "sk": {"S": "x"}}}},
                    {
                        "Update": {
                            "TableName": "t",
                            "Key": {"pk": {"S": "c"}, "sk": {"S": "x"}},
                            "UpdateExpression": "SET n = n + :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                    {"Delete": {"TableName": "t", "Key": {"pk": {"S": "d"}, "sk": {"S": "x"}}}},
                    {
                        "Put": {
                            "TableName": "t",
                            "Item": {"pk": {"S": "a"}, "sk": {"S": "x"}, "n": {"N": "2"}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        assert item(client, "b") is None
        assert item(client, "a") == {"pk": {"S": "a"}, "sk": {"S": "x"}, "n": {"N": "1"}}
        assert item(client, "c") == {"pk": {"S": "c"}, "sk": {"S": "x"}, "n": {"N": "1"}}
        # and one that succeeds writes every item
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}, "sk": {"S": "x"}}}},
                {"Delete": {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "x"}}}},
            ]
        )
        assert item(client, "b") is not None
        assert item(client, "a") is None


def test_sqs_still_drops_a_message_past_its_retention() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})[
            "QueueUrl"
        ]
        sqs.send_message(QueueUrl=url, MessageBody="kept")
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url).get("Messages", [])] == [
            "kept"
        ]
        from moto.sqs.models import sqs_backends

        queue = sqs_backends["123456789012"]["us-east-1"].queues["q"]
        for message in queue._messages:
            message.sent_timestamp -= 61_000  # sent 61 s ago, past the 60 s retention
            message.change_visibility(0)
        assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []


@pytest.mark.parametrize("fifo", [False, True])
def test_receives_at_once_never_share_a_message_or_a_fifo_group(fifo: bool) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        name, attributes = ("q.fifo", {"FifoQueue": "true"}) if fifo else ("q", {})
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        for start in range(0, 100, 10):
            entries = [
                {"Id": str(n), "MessageBody": f"m{n}"}
                | (
                    {"MessageGroupId": f"g{n % 20}", "MessageDeduplicationId": f"d{n}"}
                    if fifo
                    else {}
                )
                for n in range(start, start + 10)
            ]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        batches: list[list[dict[str, object]]] = []

        def receive() -> None:
            while True:
                got = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=60,
                    AttributeNames=["MessageGroupId"],
                ).get("Messages", [])
                if not got:
                    return
                batches.append(got)

        threads = [threading.Thread(target=receive) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    bodies = [m["Body"] for batch in batches for m in batch]
    if fifo:
        # No group in flight is received again: one receive each, each group's first.
        groups = [m["Attributes"]["MessageGroupId"] for batch in batches for m in batch]  # type: ignore[index]
        assert len(groups) == len(set(groups))
    else:
        assert sorted(bodies) == sorted(f"m{n}" for n in range(100))  # each once


def test_deletes_at_once_stay_deleted() -> None:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads change hands inside moto's passes, as on a busy CI
    try:
        with mock_aws():
            sqs = boto3.client("sqs", region_name="us-east-1")
            url = sqs.create_queue(QueueName="q")["QueueUrl"]
            for start in range(0, 200, 10):
                entries = [{"Id": str(n), "MessageBody": f"m{start + n}"} for n in range(10)]
                sqs.send_message_batch(QueueUrl=url, Entries=entries)
            handles: list[str] = []
            while got := sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60
            ).get("Messages", []):
                handles.extend(m["ReceiptHandle"] for m in got)
            assert len(handles) == 200

            def delete(part: list[str]) -> None:
                for start in range(0, len(part), 10):
                    entries = [
                        {"Id": str(n), "ReceiptHandle": handle}
                        for n, handle in enumerate(part[start : start + 10])
                    ]
                    assert not sqs.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed")

            threads = [threading.Thread(target=delete, args=(handles[n::8],)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    finally:
        sys.setswitchinterval(switch)
    assert left["ApproximateNumberOfMessagesNotVisible"] == "0"  # none came back
    assert left["ApproximateNumberOfMessages"] == "0"
