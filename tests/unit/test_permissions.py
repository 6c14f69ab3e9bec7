"""The broker permissions of each role, checked the way RabbitMQ checks them.

RabbitMQ searches a permission's expression in a resource's name (`re:run`, not anchored);
`allows` does the same. What the topology declares comes from `Topology.delete`, run against
a channel that records names: a list independent of the recording `permissions` does.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from jobmanager.cli.main import app
from jobmanager.core import delays, permissions
from jobmanager.core.permissions import DEFAULT_EXCHANGE, ROLES, RolePermissions
from jobmanager.core.topology import Topology

TOPOLOGY = Topology("jobmanager")


def allows(expression: str, name: str) -> bool:
    return re.search(expression, name) is not None


def role(name: str, topology: Topology = TOPOLOGY) -> RolePermissions:
    (found,) = [p for p in permissions.permissions(topology) if p.role == name]
    return found


class _Deleting:
    def __init__(self) -> None:
        self.names: list[str] = []

    async def queue_delete(self, name: str) -> None:
        self.names.append(name)

    async def exchange_delete(self, name: str) -> None:
        self.names.append(name)


def topology_names(topology: Topology = TOPOLOGY) -> list[str]:
    channel = _Deleting()
    coroutine = topology.delete(channel)  # type: ignore[arg-type]
    with pytest.raises(StopIteration):
        coroutine.send(None)
    return [*channel.names, topology.events_exchange]


def test_each_expression_matches_exactly_its_grants() -> None:
    everything = [*topology_names(), DEFAULT_EXCHANGE, "amq.gen-x1", "jobmanager.delay.due.q"]
    by_role = permissions.grants(TOPOLOGY)
    for p in permissions.permissions(TOPOLOGY):
        g = by_role[p.role]
        for expression, granted in (
            (p.configure, g.configure),
            (p.write, g.write),
            (p.read, g.read),
        ):
            matched = {n for n in everything if allows(expression, n)}
            expected = set(granted) | ({"amq.gen-x1"} if g.server_named else set())
            assert matched == expected, (p.role, expression)


def test_every_expression_is_anchored() -> None:
    for p in permissions.permissions(TOPOLOGY):
        for expression in (p.configure, p.write, p.read):
            assert expression.startswith("^") and expression.endswith("$"), (p.role, expression)
            re.compile(expression)


@pytest.mark.parametrize("name", ["matcher", "admin", "executor"])
def test_the_services_that_declare_the_topology_may_configure_every_name_of_it(name: str) -> None:
    configure = role(name).configure
    for resource in topology_names():
        assert allows(configure, resource), (name, resource)


def test_nothing_outside_the_namespace_is_granted() -> None:
    others = [
        "jobmanager2.work",
        "jobmanagerxwork",
        "other.jobmanager.work",
        "jobmanager.work.extra",
        "jobmanager.delay.32",
        "amq.topic",
        "channel-manager.eventsx",
    ]
    for p in permissions.permissions(TOPOLOGY):
        for expression in (p.configure, p.write, p.read):
            for other in others:
                assert not allows(expression, other), (p.role, expression, other)


def test_names_of_another_namespace_are_not_granted() -> None:
    other = Topology("staging", events_exchange="staging.cm-events")
    for p in permissions.permissions(TOPOLOGY):
        for expression in (p.configure, p.write, p.read):
            for name in topology_names(other):
                assert not allows(expression, name), (p.role, name)


def test_the_executor_cannot_publish_work_events_notices_or_delayed_requests() -> None:
    executor = role("executor")
    t = TOPOLOGY
    assert allows(executor.write, t.results_exchange)
    # The default exchange routes to every queue by name: the work queue, the events queue.
    for forbidden in (
        DEFAULT_EXCHANGE,
        t.events_exchange,
        t.runs_exchange,
        t.control_exchange,
        t.delay_entry,
    ):
        assert not allows(executor.write, forbidden), forbidden


def test_the_executor_consumes_the_work_queue_only() -> None:
    executor = role("executor")
    t = TOPOLOGY
    assert allows(executor.read, t.work_queue)
    for queue in (
        t.events_queue,
        t.due_queue,
        t.results_queue,
        t.lost_queue,
        t.dead_queue,
        *(t.delay_queue(level) for level in delays.LEVELS),
    ):
        assert not allows(executor.read, queue), queue


def test_the_executor_redeclares_but_cannot_create_queues_that_dead_letter() -> None:
    existing, creating = permissions.declaring(TOPOLOGY)
    assert DEFAULT_EXCHANGE not in existing.write
    assert DEFAULT_EXCHANGE in creating.write
    assert TOPOLOGY.work_queue in creating.read - existing.read
    assert permissions.grants(TOPOLOGY)["executor"].write >= existing.write


def test_the_channel_manager_may_only_declare_and_publish_to_its_exchange() -> None:
    cm = role("channel-manager")
    assert cm.configure == cm.write == r"^(channel-manager\.events)$"
    assert cm.read == "^$"


def test_the_matcher_binds_and_consumes_a_server_named_control_queue() -> None:
    matcher = role("matcher")
    control = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"
    for expression in (matcher.configure, matcher.write, matcher.read):
        assert allows(expression, control)
    assert allows(matcher.read, TOPOLOGY.control_exchange)
    for queue in (
        TOPOLOGY.events_queue,
        TOPOLOGY.due_queue,
        TOPOLOGY.results_queue,
        TOPOLOGY.lost_queue,
    ):
        assert allows(matcher.read, queue), queue
    assert allows(matcher.write, DEFAULT_EXCHANGE)
    for p in permissions.permissions(TOPOLOGY):
        if p.role not in ("matcher", "executor"):
            assert not allows(p.configure, control), p.role


def test_the_executor_binds_a_server_named_cancel_queue_and_cannot_cancel() -> None:
    executor = role("executor")
    t = TOPOLOGY
    # A broker-named queue, and one a robust channel names (the executor's, after each
    # reconnect too); nothing else under those prefixes.
    for queue in ("amq.gen-JzTY20BRgKO-HjmUJj0wLg", f"amq_{uuid.uuid4().hex}"):
        for expression in (executor.configure, executor.write, executor.read):
            assert allows(expression, queue)
    assert not allows(executor.configure, "amq_work")
    assert allows(executor.read, t.executor_control_exchange)
    assert not allows(executor.read, t.control_exchange), "the matchers' broadcasts"
    assert not allows(executor.write, t.executor_control_exchange), "cancels come from others"
    for sender in ("admin", "matcher"):
        assert allows(role(sender).write, t.executor_control_exchange), sender


def test_the_admin_publishes_requests_notices_and_broadcasts() -> None:
    admin = role("admin")
    t = TOPOLOGY
    for exchange in (DEFAULT_EXCHANGE, t.delay_entry, t.runs_exchange, t.control_exchange):
        assert allows(admin.write, exchange), exchange
    assert not allows(admin.write, t.results_exchange)
    assert not allows(admin.write, t.events_exchange)


def commands(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line and not line.startswith("#")]


def test_the_commands_set_each_roles_permissions() -> None:
    text = permissions.rabbitmqctl(TOPOLOGY, vhost="/prod")
    found = commands(text)
    assert [c[:4] for c in found] == [["rabbitmqctl", "set_permissions", "-p", "/prod"]] * 4
    assert [c[4:] for c in found] == [
        [f"jobmanager-{p.role}", p.configure, p.write, p.read]
        for p in permissions.permissions(TOPOLOGY)
    ]
    assert all(len(line) <= 100 for line in text.splitlines() if line.startswith("#"))


def test_the_definitions_name_each_user_once() -> None:
    document = permissions.definitions(TOPOLOGY, users={"executor": "exec-1"})
    users = [p["user"] for p in document["permissions"]]
    assert users == [
        "jobmanager-matcher",
        "jobmanager-admin",
        "exec-1",
        "jobmanager-channel-manager",
    ]
    assert {p["vhost"] for p in document["permissions"]} == {"/"}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, ["broker-permissions", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_command_prints_them_for_the_namespace_given() -> None:
    topology = Topology("staging", events_exchange="cm.events")
    options = ["--namespace", "staging", "--events-exchange", "cm.events", "--vhost", "v1"]
    assert invoke(*options) == permissions.rabbitmqctl(topology, vhost="v1")
    document: dict[str, Any] = json.loads(invoke(*options, "--format", "json"))
    assert document == permissions.definitions(topology, vhost="v1")


def test_every_role_has_a_purpose() -> None:
    assert set(permissions.PURPOSE) == set(ROLES)


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["a"],
        ["a", "a.b", "a.b.c", "a.c"],
        ["x.1.q", "x.2.q", "x.2", "x.3"],
        ["odd(name)", "star*", "dot.", ".lead", "plus+one"],
    ],
)
def test_a_pattern_matches_exactly_its_names(names: list[str]) -> None:
    expression = permissions.pattern(names)
    universe = [*names, "a.b.d", "ab", "a.bc", "x.1", "x.3.q", "x", "oddname", "sta", "dot"]
    assert {n for n in universe if allows(expression, n)} == set(names)
