"""What a committed ledger transition has to publish, and publishing it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from jobmanager.core.broker import Publisher
from jobmanager.core.messages import CancelRequest, JobNotice, JobRequest, RunNotice


@dataclass
class Outbox:
    """Requests for the gate, work for the executors (runs dispatched in the transaction
    that made them due, or re-sent by the reaper), notices for the runs exchange and
    cancels for the executors' control exchange, published after commit."""

    requests: list[JobRequest] = field(default_factory=list)
    notices: list[RunNotice] = field(default_factory=list)
    work: list[JobRequest] = field(default_factory=list)
    job_notices: list[JobNotice] = field(default_factory=list)
    cancels: list[CancelRequest] = field(default_factory=list)

    def extend(self, other: Outbox) -> None:
        self.requests += other.requests
        self.notices += other.notices
        self.work += other.work
        self.job_notices += other.job_notices
        self.cancels += other.cancels

    async def publish(self, publisher: Publisher, *, now: datetime) -> None:
        """Publish everything, all in flight at once; returns when the broker confirmed all.

        The caller acks its input only after this returns: if it raises, the input is
        redelivered and the ledger's checks make the repeat harmless.
        """
        topology = publisher.topology
        await asyncio.gather(
            *(publisher.schedule(request, now) for request in self.requests),
            # Notices are for whoever listens; with no subscriber bound they go nowhere.
            # (Sent before the work, so a run's `queued` notice normally comes first.)
            *(
                publisher.publish(topology.runs_exchange, n.routing_key, n, mandatory=False)
                for n in self.notices
            ),
            *(
                publisher.publish(topology.runs_exchange, n.routing_key, n, mandatory=False)
                for n in self.job_notices
            ),
            *(publisher.publish("", topology.work_queue, request) for request in self.work),
            # A cancel no executor hears (none connected) is not an error: the ledger has
            # ended the run, and a start reported later has it sent again.
            *(
                publisher.publish(topology.executor_control_exchange, "", c, mandatory=False)
                for c in self.cancels
            ),
        )
