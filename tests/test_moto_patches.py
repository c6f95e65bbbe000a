"""The tests' patches of moto (support.patch_moto) keep the services' behaviour: a cancelled
DynamoDB transaction leaves every item as it was, and SQS still drops a message past its
retention period."""

from __future__ import annotations

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
