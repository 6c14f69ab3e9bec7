"""Least privilege on the broker: the RabbitMQ permissions of each role, from the topology.

RabbitMQ gives a user, per vhost, three regular expressions over the names of exchanges and
queues: *configure* (declare, delete), *write* (publish to an exchange; be the destination
of a binding) and *read* (consume from a queue; be the source of a binding). Passive declares
need none of them. Declaring a queue with a dead-letter exchange additionally needs, when the
queue is created, read on the queue and write on the dead-letter exchange; the default
exchange `""` is checked as `amq.default`, and whoever may write to it may publish to every
queue of the vhost. RabbitMQ searches the expressions (they are not anchored), so every one
here is `^(…)$`.

What each role declares at start is not listed by hand: `Topology.declare` is run against a
channel that only records what it is asked to do, so these permissions follow the topology
when it changes. What each role publishes and consumes is named through the topology.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractChannel

from jobmanager.core.topology import Topology

DEFAULT_EXCHANGE = "amq.default"
# The names of the services' exclusive queues: those RabbitMQ gives server-named queues
# (clients cannot declare names under `amq.` themselves), and those aio-pika's robust
# channels give a queue declared without a name (`amq_` and a UUID's 32 hex digits, chosen
# by the client so that the queue is declared again under its name after a reconnect).
SERVER_NAMED = r"amq\.gen-.*|amq_[0-9a-f]{32}"
NOTHING = "^$"

ROLES = ("matcher", "admin", "executor", "channel-manager")

PURPOSE: Mapping[str, str] = {
    "matcher": "creates or declares the topology; consumes events, due requests, results and "
    "lost requests; publishes work, delayed requests, run notices, parked messages and "
    "cancels sent again; binds its exclusive control queue",
    "admin": "creates or declares the topology; publishes requests (Execute Now, re-execute), "
    "work, run notices, cancels and change broadcasts (the admin service and `jobmanager "
    "apply`)",
    "executor": "declares the topology at start (the topology must exist already); consumes "
    "the work queue; publishes results; binds its exclusive cancel queue",
    "channel-manager": "declares and publishes to its events exchange, nothing else",
}

_META = frozenset(".^$*+?()[]{}|\\")


@dataclass(frozen=True)
class Grants:
    """Resource names a role may configure, write and read (exact names)."""

    configure: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    read: frozenset[str] = frozenset()
    # Configure, write and read on the server-named queues (the matcher's control queue, an
    # executor's cancel queue).
    server_named: bool = False

    def __or__(self, other: Grants) -> Grants:
        return Grants(
            self.configure | other.configure,
            self.write | other.write,
            self.read | other.read,
            self.server_named or other.server_named,
        )


@dataclass(frozen=True)
class RolePermissions:
    """One role's three regular expressions, as `rabbitmqctl set_permissions` takes them."""

    role: str
    configure: str
    write: str
    read: str


def publishes(*exchanges: str) -> Grants:
    return Grants(write=frozenset(exchanges))


def consumes(*queues: str) -> Grants:
    return Grants(read=frozenset(queues))


@dataclass
class _Declaring:
    """What a declare needs: `always` for every declare, `creating` only for a new queue."""

    always: Grants = field(default_factory=Grants)
    creating: Grants = field(default_factory=Grants)


class _Entity:
    """A declared exchange or queue: binding it records the rights a binding needs."""

    def __init__(self, recorder: _Declaring, name: str) -> None:
        self.name = name
        self._recorder = recorder

    async def bind(self, source: _Entity | str, *args: Any, **kwargs: Any) -> None:
        # A binding needs write on its destination (this one) and read on its source.
        name = source if isinstance(source, str) else source.name
        self._recorder.always |= Grants(write=frozenset({self.name}), read=frozenset({name}))


class _RecordingChannel:
    """Stands in for a channel in `Topology.declare` and records what each call needs."""

    def __init__(self, recorder: _Declaring) -> None:
        self._recorder = recorder

    async def declare_exchange(self, name: str, *args: Any, **kwargs: Any) -> _Entity:
        self._recorder.always |= Grants(configure=frozenset({name}))
        return _Entity(self._recorder, name)

    async def declare_queue(
        self, name: str, *, arguments: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> _Entity:
        self._recorder.always |= Grants(configure=frozenset({name}))
        dead_letter = (arguments or {}).get("x-dead-letter-exchange")
        if dead_letter is not None:
            self._recorder.creating |= Grants(
                write=frozenset({dead_letter or DEFAULT_EXCHANGE}), read=frozenset({name})
            )
        return _Entity(self._recorder, name)


def _drive(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits for anything to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("Topology.declare waited for something other than the recording channel")


def declaring(topology: Topology) -> tuple[Grants, Grants]:
    """What `Topology.declare` needs: on a vhost where the topology exists already, and
    (the second) where it may have to create it."""
    recorder = _Declaring()
    _drive(topology.declare(cast(AbstractChannel, _RecordingChannel(recorder))))
    return recorder.always, recorder.always | recorder.creating


def grants(topology: Topology) -> dict[str, Grants]:
    """Each role's grants, by the operations its service performs."""
    t = topology
    existing, creating = declaring(t)
    return {
        # Work, due requests and parked messages go through the default exchange; a
        # delayed request enters the delay stage at its highest level.
        "matcher": creating
        | publishes(DEFAULT_EXCHANGE, t.delay_entry, t.runs_exchange, t.executor_control_exchange)
        | consumes(t.events_queue, t.due_queue, t.results_queue, t.lost_queue)
        | Grants(read=frozenset({t.control_exchange}), server_named=True),
        "admin": creating
        | publishes(
            DEFAULT_EXCHANGE,
            t.delay_entry,
            t.runs_exchange,
            t.control_exchange,
            t.executor_control_exchange,
        ),
        # No default exchange: it would let an executor publish straight to any queue (the
        # work queue, the events queue). Parking an invalid request then fails and the
        # executor rejects it: the work queue dead-letters it to the lost queue, and the
        # matcher parks it from there.
        # Its cancels arrive in an exclusive server-named queue bound to the executors'
        # control exchange.
        "executor": existing
        | publishes(t.results_exchange)
        | consumes(t.work_queue)
        | Grants(read=frozenset({t.executor_control_exchange}), server_named=True),
        "channel-manager": Grants(
            configure=frozenset({t.events_exchange}), write=frozenset({t.events_exchange})
        ),
    }


def _escape(segment: str) -> str:
    return "".join(f"\\{c}" if c in _META else c for c in segment)


@dataclass
class _Node:
    """Names as a tree of their dot-separated segments."""

    children: dict[str, _Node] = field(default_factory=dict)
    end: bool = False


def _alternatives(node: _Node) -> list[str]:
    """The expressions of the segments below `node`; segments whose continuations are the
    same share one (the delay levels: `(04|05|…)(\\.q)?`)."""
    by_rest: dict[str, list[str]] = {}
    for segment, child in node.children.items():
        by_rest.setdefault(_continuation(child), []).append(_escape(segment))
    found: list[str] = []
    for rest, segments in by_rest.items():
        if not rest or len(segments) == 1:
            found += [segment + rest for segment in segments]
        else:
            found.append(f"({'|'.join(sorted(segments))}){rest}")
    return sorted(found)


def _continuation(node: _Node) -> str:
    alternatives = _alternatives(node)
    if not alternatives:
        return ""
    below = alternatives[0] if len(alternatives) == 1 else f"({'|'.join(alternatives)})"
    return f"(\\.{below})?" if node.end else f"\\.{below}"


def pattern(names: Iterable[str], *, server_named: bool = False) -> str:
    """An anchored expression matching exactly `names` (and server-named queues), written
    as a tree of their segments so that people can read it."""
    root = _Node()
    for name in set(names):
        node = root
        for segment in name.split("."):
            node = node.children.setdefault(segment, _Node())
        node.end = True
    alternatives = _alternatives(root)
    if server_named:
        alternatives.append(SERVER_NAMED)
    if not alternatives:
        return NOTHING
    return f"^({'|'.join(alternatives)})$"


def permissions(topology: Topology) -> list[RolePermissions]:
    """The regular expressions of every role, in the order of `ROLES`."""
    by_role = grants(topology)
    return [
        RolePermissions(
            role,
            configure=pattern(g.configure, server_named=g.server_named),
            write=pattern(g.write, server_named=g.server_named),
            read=pattern(g.read, server_named=g.server_named),
        )
        for role in ROLES
        for g in [by_role[role]]
    ]


def user_name(topology: Topology, role: str) -> str:
    """The broker user of a role: one per role and namespace."""
    return f"{topology.namespace}-{role}"


def _comment(text: str, *, indent: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        94,
        initial_indent="# ",
        subsequent_indent=f"# {indent}",
        break_long_words=False,
        break_on_hyphens=False,
    )


def rabbitmqctl(
    topology: Topology, *, vhost: str = "/", users: Mapping[str, str] | None = None
) -> str:
    """The `rabbitmqctl set_permissions` commands of every role, with comments saying what
    each role does (a shell script; users default to `user_name`)."""
    header = (
        f"RabbitMQ permissions of Job Manager's roles (namespace {topology.namespace!r}, vhost "
        f"{vhost!r}, events exchange {topology.events_exchange!r}), generated from the "
        "topology by `jobmanager broker-permissions`. Create each user once (`rabbitmqctl "
        "add_user USER`, with a password of its own), then run these lines; run them again "
        "after an upgrade: set_permissions replaces a user's permissions."
    )
    lines = _comment(header)
    for p in permissions(topology):
        user = (users or {}).get(p.role) or user_name(topology, p.role)
        lines += [
            "",
            *_comment(f"{p.role}: {PURPOSE[p.role]}", indent="  "),
            shlex.join(
                ["rabbitmqctl", "set_permissions", "-p", vhost, user, p.configure, p.write, p.read]
            ),
        ]
    return "\n".join(lines) + "\n"


def definitions(
    topology: Topology, *, vhost: str = "/", users: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The permissions as a RabbitMQ definitions document (`rabbitmqctl import_definitions`;
    the users must exist first)."""
    return {
        "permissions": [
            {
                "user": (users or {}).get(p.role) or user_name(topology, p.role),
                "vhost": vhost,
                "configure": p.configure,
                "write": p.write,
                "read": p.read,
            }
            for p in permissions(topology)
        ]
    }
