"""The AsyncAPI document's queue bindings are enough to declare our queues: an executor
written from it that declares each queue with the documented arguments agrees with the
matcher's `Topology.declare`, before or after it, on the real broker; one that leaves the
arguments out is refused, which is why the document gives them."""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import aiormq
import pytest

from jobmanager.cli import asyncapi
from jobmanager.core.topology import Topology


def documented_queues(topology: Topology) -> list[dict[str, Any]]:
    channels = asyncapi.document(topology)["channels"].values()
    return [
        c["bindings"]["amqp"]["queue"] for c in channels if c["bindings"]["amqp"]["is"] == "queue"
    ]


@pytest.mark.parametrize("documented_first", [True, False], ids=["before", "after"])
async def test_queues_declared_as_documented_agree_with_the_matcher(
    amqp_url: str, documented_first: bool
) -> None:
    topology = Topology(f"jmtest-{uuid.uuid4().hex[:10]}")
    queues = documented_queues(topology)
    assert {q["name"] for q in queues} == set(topology.queue_arguments())
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()

        async def as_documented() -> None:
            for queue in queues:
                await channel.declare_queue(
                    queue["name"], durable=queue["durable"], arguments=queue["x-arguments"]
                )

        if documented_first:
            await as_documented()
            await topology.declare(channel)
        else:
            await topology.declare(channel)
            await as_documented()

        # Without the arguments (a durable queue, as a binding without them would read):
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(topology.work_queue, durable=True)
        await topology.delete(await connection.channel())
    finally:
        await connection.close()
