"""`python -m bench.relay_process URL SOURCE TARGET PREFETCH`: the raw aio-pika relay.

Consumes SOURCE with a large prefetch and publishes each message to TARGET on a confirming
channel, many in flight, acking the source message only once its copy is confirmed: one hop of
at-least-once forwarding and nothing else, the limit of what one Python process does per hop
on this machine. It waits for a line on stdin before it consumes (the driver fills SOURCE
first) and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def relay(url: str, source: str, target: str, prefetch: int) -> None:
    connection = await aio_pika.connect(url)
    consuming = await connection.channel()
    await consuming.set_qos(prefetch_count=prefetch)
    publishing = await connection.channel(publisher_confirms=True)
    exchange = publishing.default_exchange
    queue = await consuming.get_queue(source, ensure=False)
    tasks: set[asyncio.Task[None]] = set()

    async def forward(message: AbstractIncomingMessage) -> None:
        await exchange.publish(
            aio_pika.Message(
                message.body,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
            ),
            routing_key=target,
        )
        await message.ack()

    async def on_message(message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(forward(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the driver's "go"
    await queue.consume(on_message)
    await stop.wait()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    await connection.close()


def main() -> int:
    url, source, target, prefetch = sys.argv[1:5]
    asyncio.run(relay(url, source, target, int(prefetch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
