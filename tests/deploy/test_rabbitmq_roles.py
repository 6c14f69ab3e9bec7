"""The roles' permissions applied to a vhost of the real broker: each role does its work and
is refused everything else.

A scratch vhost and one user per role are created with `rabbitmqctl` (the broker's own tool;
`JOBMANAGER_TEST_RABBITMQCTL` may name another command, e.g. `docker exec rabbit rabbitmqctl`),
the permissions are set by running the very commands `jobmanager broker-permissions` prints,
and everything is deleted afterwards. Without `rabbitmqctl` the tests skip (fail under CI).
The topology is the default one (`jobmanager`, `channel-manager.events`): the vhost isolates it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused
from deployfiles import ROOT

from jobmanager.core import permissions
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import JobRef, JobRequest, RunNotice
from jobmanager.core.permissions import ROLES
from jobmanager.core.topology import Topology
from jobmanager.executor.config import ExecutorSettings
from jobmanager.executor.service import serve
from jobmanager.testkit import namespaces

TOPOLOGY = Topology("jobmanager")
README = ROOT / "deploy" / "rabbitmq" / "README.md"


def test_the_readme_shows_the_generated_commands() -> None:
    """The README's commands are the generator's for the default namespace, not a copy that
    could drift from the topology."""
    blocks = re.findall(r"```sh\n(# RabbitMQ permissions.*?)```", README.read_text(), re.S)
    assert blocks == [permissions.rabbitmqctl(TOPOLOGY)], (
        "refresh it with `jobmanager broker-permissions`"
    )


# -- the scratch vhost ------------------------------------------------------------------------


def rabbitmqctl_command() -> list[str]:
    command = shlex.split(os.environ.get("JOBMANAGER_TEST_RABBITMQCTL", "rabbitmqctl"))
    if shutil.which(command[0]) is None:
        message = f"{command[0]} is not available to create a vhost and users"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the real broker is required)", pytrace=False)
        pytest.skip(message)
    return command


def password_hash(password: str) -> str:
    """RabbitMQ's salted SHA-256 (`rabbit_password_hashing_sha256`), for a definitions file."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass(frozen=True)
class Scratch:
    amqp_url: str
    vhost: str
    users: dict[str, tuple[str, str]]  # role → (user, password)

    def url(self, role: str) -> str:
        user, password = self.users[role]
        parts = urlsplit(self.amqp_url)
        netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port or 5672}"
        return f"{parts.scheme}://{netloc}/{quote(self.vhost, safe='')}"


@pytest.fixture(scope="module")
def scratch(amqp_url: str) -> Iterator[Scratch]:
    ctl = rabbitmqctl_command()

    def run(*args: str, stdin: str | None = None) -> None:
        subprocess.run([*ctl, *args], input=stdin, text=True, check=True, capture_output=True)

    vhost = namespaces.unique("jmtest-roles")
    users = {r: (f"{vhost}-{r}", secrets.token_hex(16)) for r in ROLES}
    created = {
        "vhosts": [{"name": vhost}],
        "users": [
            {
                "name": user,
                "password_hash": password_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": "",
            }
            for user, password in users.values()
        ],
    }
    try:
        run("import_definitions", "--format", "json", stdin=json.dumps(created))
        generated = permissions.rabbitmqctl(
            TOPOLOGY, vhost=vhost, users={r: user for r, (user, _) in users.items()}
        )
        for line in generated.splitlines():
            if line and not line.startswith("#"):
                command = shlex.split(line)
                assert command[0] == "rabbitmqctl"
                run(*command[1:])
        yield Scratch(amqp_url, vhost, users)
    finally:
        with suppress(subprocess.CalledProcessError):
            run("delete_vhost", vhost)
        for user, _ in users.values():
            with suppress(subprocess.CalledProcessError):
                run("delete_user", user)


@asynccontextmanager
async def connected(scratch: Scratch, role: str) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(scratch.url(role))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def declared(scratch: Scratch) -> Scratch:
    """The topology, created in the empty vhost by the matcher as it does at start."""
    async with connected(scratch, "matcher") as connection:
        await TOPOLOGY.declare(await connection.channel())
    return scratch


Operation = Callable[[AbstractChannel], Awaitable[object]]


async def refused(connection: AbstractConnection, operation: Operation) -> None:
    """The broker refuses the operation (and closes the channel it was tried on)."""
    channel = await connection.channel(publisher_confirms=True)
    with pytest.raises(ChannelAccessRefused):
        await asyncio.wait_for(operation(channel), 10)


async def ack(incoming: AbstractIncomingMessage) -> None:
    await incoming.ack()


def message(body: bytes = b"{}") -> aio_pika.Message:
    return aio_pika.Message(body, content_type="application/json")


def publish_to(exchange: str, routing_key: str) -> Operation:
    async def publish(channel: AbstractChannel) -> None:
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(message(), routing_key)

    return publish


def consume(queue_name: str) -> Operation:
    async def start(channel: AbstractChannel) -> None:
        queue = await channel.get_queue(queue_name)  # passive: allowed to anyone
        tag = await queue.consume(ack)
        await queue.cancel(tag)

    return start


def declare_queue(name: str) -> Operation:
    async def declare(channel: AbstractChannel) -> None:
        await channel.declare_queue(name, durable=True)

    return declare


def bind(queue_name: str, exchange: str, key: str = "#") -> Operation:
    async def start(channel: AbstractChannel) -> None:
        queue = await channel.get_queue(queue_name)
        await queue.bind(exchange, key)

    return start


def job_request(run_id: int, *, delay_s: float = 0.0) -> JobRequest:
    now = datetime.now(UTC)
    return JobRequest(
        run_id=run_id,
        attempt=1,
        job=JobRef(id=1, name="job"),
        script="ok",
        command="ESPN-HD",
        timeout_s=10,
        lane="default",
        event_id="ev-1",
        not_before=now + timedelta(seconds=delay_s),
        requested_at=now,
    )


async def take(
    connection: AbstractConnection,
    queue_name: str,
    wanted: Callable[[AbstractIncomingMessage], bool],
) -> AbstractIncomingMessage:
    """The first message of the queue that is `wanted` (others are acked away)."""
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name)
    found: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def on_message(incoming: AbstractIncomingMessage) -> None:
        await incoming.ack()
        if wanted(incoming) and not found.done():
            found.set_result(incoming)

    tag = await queue.consume(on_message)
    try:
        return await asyncio.wait_for(found, 20)
    finally:
        await queue.cancel(tag)
        await channel.close()


# -- each role's work -------------------------------------------------------------------------


async def test_the_matcher_does_its_work(declared: Scratch) -> None:
    t = TOPOLOGY
    async with connected(declared, "matcher") as connection:
        # Declaring again at the next start, and its exclusive control queue.
        await t.declare(await connection.channel())
        control = await connection.channel()
        queue = await control.declare_queue(exclusive=True, auto_delete=True)
        assert queue.name.startswith("amq.gen-")
        await queue.bind(t.control_exchange)
        await queue.cancel(await queue.consume(ack))
        for consumed in (t.events_queue, t.due_queue, t.results_queue, t.lost_queue):
            await consume(consumed)(await connection.channel())
        publisher = await Publisher.open(connection, t)
        now = datetime.now(UTC)
        await publisher.schedule(job_request(1), now)  # the due queue, by the default exchange
        await publisher.schedule(job_request(2, delay_s=60), now)  # the delay stage
        await publisher.publish("", t.work_queue, job_request(3))
        notice = RunNotice(
            run_id=3, state="queued", attempt=1, job="job", lane="default", event_id="e", at=now
        )
        await publisher.publish(t.runs_exchange, "run.queued", notice, mandatory=False)
        await publisher.publish_raw("", t.dead_queue, b"{}", headers={"x-jobmanager-error": "t"})
        # The upkeep's look at the work queue: a passive declare.
        work = await (await connection.channel()).declare_queue(t.work_queue, passive=True)
        assert work.declaration_result.message_count == 1
        await publisher.channel.close()
        # Nothing outside the namespace.
        await refused(connection, declare_queue("other.work"))


async def test_the_executor_starts_runs_a_request_and_reports_its_result(
    declared: Scratch, tmp_path: Path
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "ok.py").write_text("def run(command, ctx):\n    return 3, 'ok ' + command\n")
    settings = ExecutorSettings(
        amqp_url=declared.url("executor"),
        namespace=TOPOLOGY.namespace,
        events_exchange=TOPOLOGY.events_exchange,
        scripts_dir=scripts,
        concurrency=1,
        executor_id="exec-roles",
    )
    stop = asyncio.Event()
    # The real executor: declares the topology at start, consumes work, publishes results.
    executor = asyncio.create_task(serve(settings, stop=stop))
    try:
        async with connected(declared, "matcher") as matcher:
            publisher = await Publisher.open(matcher, TOPOLOGY)
            await publisher.publish("", TOPOLOGY.work_queue, job_request(41))

            reported: list[AbstractIncomingMessage] = []

            def result_of_41(m: AbstractIncomingMessage) -> bool:
                if m.routing_key == "executor.report":  # sent at start, then periodically
                    reported.append(m)
                return m.routing_key == "run.succeeded" and json.loads(m.body)["run_id"] == 41

            result = json.loads((await take(matcher, TOPOLOGY.results_queue, result_of_41)).body)
            assert (result["executor"], result["feedback"]) == ("exec-roles", "ok ESPN-HD")
            assert json.loads(reported[0].body)["scripts"] == ["ok"]
            assert not executor.done()
    finally:
        stop.set()
        await asyncio.wait_for(executor, 15)


@pytest.mark.parametrize(
    ("what", "operation"),
    [
        ("publish an event", publish_to(TOPOLOGY.events_exchange, "channel.updated")),
        ("publish to the work queue", publish_to("", TOPOLOGY.work_queue)),
        ("publish to the events queue", publish_to("", TOPOLOGY.events_queue)),
        ("publish a run notice", publish_to(TOPOLOGY.runs_exchange, "run.succeeded")),
        ("broadcast a change", publish_to(TOPOLOGY.control_exchange, "")),
        ("enter the delay stage", publish_to(TOPOLOGY.delay_entry, "a")),
        ("consume the events queue", consume(TOPOLOGY.events_queue)),
        ("consume the results queue", consume(TOPOLOGY.results_queue)),
        ("consume the due queue", consume(TOPOLOGY.due_queue)),
        ("consume the dead queue", consume(TOPOLOGY.dead_queue)),
        ("declare a queue of its own", declare_queue(f"{TOPOLOGY.namespace}.spy")),
        ("bind the work queue", bind(TOPOLOGY.work_queue, TOPOLOGY.results_exchange)),
    ],
)
async def test_the_executor_is_refused(declared: Scratch, what: str, operation: Operation) -> None:
    async with connected(declared, "executor") as connection:
        await refused(connection, operation)


async def test_the_executor_cannot_create_a_queue_that_dead_letters(declared: Scratch) -> None:
    """Its declare succeeds only where the topology exists: creating a queue with a
    dead-letter exchange needs read on the queue and write on that exchange (here the
    default one), which executors lack; declaring it again does not."""
    async with connected(declared, "matcher") as matcher:
        await (await matcher.channel()).queue_delete(TOPOLOGY.lost_queue)
        try:
            async with connected(declared, "executor") as executor:
                await refused(executor, TOPOLOGY.declare)
        finally:
            await TOPOLOGY.declare(await matcher.channel())


async def test_the_channel_manager_publishes_events_and_nothing_else(declared: Scratch) -> None:
    t = TOPOLOGY
    async with connected(declared, "channel-manager") as connection:
        channel = await connection.channel(publisher_confirms=True)
        # As `jobmanager publish` does: declare the exchange, publish with a confirm.
        exchange = await channel.declare_exchange(
            t.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(message(b'{"event_id": "e-roles"}'), "channel.updated")
        # A passive declare needs no permission at all.
        await (await connection.channel()).declare_queue(t.work_queue, passive=True)
        for operation in (
            publish_to(t.results_exchange, "run.succeeded"),
            publish_to(t.results_exchange, "executor.report"),
            publish_to("", t.work_queue),
            publish_to("", t.events_queue),
            publish_to(t.runs_exchange, "run.queued"),
            publish_to(t.control_exchange, ""),
            consume(t.events_queue),
            declare_queue("cm-spy"),
            bind(t.events_queue, t.events_exchange, "spy"),
        ):
            await refused(connection, operation)
    async with connected(declared, "matcher") as matcher:

        def the_event(m: AbstractIncomingMessage) -> bool:
            return bool(m.body == b'{"event_id": "e-roles"}')

        await take(matcher, t.events_queue, the_event)


async def test_the_admin_does_its_work_and_is_refused_the_rest(declared: Scratch) -> None:
    t = TOPOLOGY
    async with connected(declared, "admin") as connection:
        await t.declare(await connection.channel())
        publisher = await Publisher.open(connection, t)
        now = datetime.now(UTC)
        await publisher.schedule(job_request(51), now)
        await publisher.schedule(job_request(52, delay_s=60), now)
        await publisher.publish("", t.work_queue, job_request(53))
        await publisher.broadcast_change("jobs")
        dead = await (await connection.channel()).declare_queue(t.dead_queue, passive=True)
        assert dead.declaration_result.message_count is not None
        await publisher.channel.close()
        # (It may read the queues it may create with dead-lettering, as RabbitMQ requires.)
        for operation in (
            publish_to(t.results_exchange, "run.succeeded"),
            publish_to(t.events_exchange, "channel.updated"),
            consume(t.dead_queue),
            declare_queue(f"{t.namespace}.spy"),
        ):
            await refused(connection, operation)
