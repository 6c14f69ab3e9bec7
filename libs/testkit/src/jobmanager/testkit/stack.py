"""Our services as processes in a namespace (and a database) of their own: the settings they
start with, and starting deciders (matchers, or a stand-in for them) and executors until
each consumes its queue.

The tests and the benchmark extend `Stack` with what they drive it with (`tests/stack.py`:
an engine, a publisher and job helpers; `bench/stack.py`: a confirmed publisher and a plain
connection to the database).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aio_pika.abc import AbstractConnection

from jobmanager.core.topology import Topology
from jobmanager.testkit.namespaces import queue_counts
from jobmanager.testkit.ports import free_port
from jobmanager.testkit.processes import Process, Processes
from jobmanager.testkit.waiting import wait_for

MATCHER = "jobmanager.matcher"
EXECUTOR = "jobmanager.executor"


def service_env(
    amqp_url: str,
    topology: Topology,
    database_url: str | None = None,
    *,
    scripts_dir: Path,
    log_level: str,
) -> dict[str, str]:
    """The settings of our services in `topology`'s namespace (the executor has no
    database)."""
    env = {
        "JOBMANAGER_AMQP_URL": amqp_url,
        "JOBMANAGER_NAMESPACE": topology.namespace,
        "JOBMANAGER_EVENTS_EXCHANGE": topology.events_exchange,
        "JOBMANAGER_SCRIPTS_DIR": str(scripts_dir),
        "JOBMANAGER_LOG_LEVEL": log_level,
    }
    if database_url is not None:
        env["JOBMANAGER_DATABASE_URL"] = database_url
    return env


@dataclass(kw_only=True)
class Stack:
    """Services started in `processes` with `env` (see `service_env`), each with a metrics
    port of its own when `metrics` is given (name: port, kept when a process is started
    again under its name)."""

    amqp_url: str
    topology: Topology
    processes: Processes
    env: dict[str, str]
    metrics: dict[str, int] | None = None
    deciders: list[Process] = field(default_factory=list)
    executors: list[Process] = field(default_factory=list)

    def start(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None
    ) -> Process:
        """`python -m module args...` with the stack's settings, then `env`."""
        extra = {}
        if self.metrics is not None:
            self.metrics[name] = self.metrics.get(name) or free_port()
            extra["JOBMANAGER_METRICS_PORT"] = str(self.metrics[name])
        return self.processes.start(
            name, ["-m", module, *args], {**self.env, **extra, **(env or {})}
        )

    def start_command(
        self, name: str, command: Sequence[str], *, env: dict[str, str] | None = None
    ) -> Process:
        """Any program with the stack's settings, then `env` (no metrics port: that is our
        services' own setting)."""
        return self.processes.start_command(name, command, {**self.env, **(env or {})})

    def log(self, name: str) -> str:
        return self.processes.log(name)

    async def serve(
        self,
        connection: AbstractConnection,
        *,
        deciders: Mapping[str, Sequence[str]],
        consumes_last: str,
        executors: int,
        concurrency: int,
        timeout: float = 60.0,
    ) -> None:
        """Start the deciders (name: module and arguments) and `executors` executors; return
        once each decider consumes `consumes_last` (the queue it starts consuming last) and
        each executor the work queue."""
        self.deciders += [self.start(name, *argv) for name, argv in deciders.items()]
        self.executors += [
            self.start(f"executor-{n}", EXECUTOR, "--concurrency", str(concurrency))
            for n in range(1, executors + 1)
        ]

        async def ready() -> bool | None:
            if (await queue_counts(connection, consumes_last))[0] < len(deciders):
                return None
            if (await queue_counts(connection, self.topology.work_queue))[0] < executors:
                return None
            return True

        await wait_for(ready, timeout, what="the services", alive=self.processes.check_alive)
