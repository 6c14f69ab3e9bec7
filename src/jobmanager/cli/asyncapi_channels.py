"""The channels and operations of the AsyncAPI document (`jobmanager.cli.asyncapi`): every
exchange and queue of the topology with its real arguments, and who sends or receives what."""

from __future__ import annotations

import json
from typing import Any

from jobmanager.core import delays
from jobmanager.core.messages import NOTICE_KEYS, ExecutorReport
from jobmanager.core.topology import WORK_DELIVERY_LIMIT, Topology

AMQP_BINDING = "0.3.0"


def _exchange(name: str, kind: str) -> dict[str, Any]:
    exchange = {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": "/"}
    return {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": AMQP_BINDING}}


def _queue(t: Topology, name: str) -> dict[str, Any]:
    """A queue's binding with its real arguments (`x-arguments`, from the topology itself):
    an executor that declares a queue must declare it with exactly these, or passively."""
    queue = {"name": name, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"}
    queue["x-arguments"] = t.queue_arguments()[name]
    return {"amqp": {"is": "queue", "queue": queue, "bindingVersion": AMQP_BINDING}}


def _channel(
    address: str | None,
    description: str,
    bindings: dict[str, Any],
    messages: list[str],
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    channel: dict[str, Any] = {"address": address, "description": description}
    channel["messages"] = {
        _message_key(name): {"$ref": f"#/components/messages/{name}"} for name in messages
    }
    if parameters:
        channel["parameters"] = parameters
    channel["bindings"] = bindings
    return channel


def _message_key(name: str) -> str:
    return name[0].lower() + name[1:]


def channels(t: Topology) -> dict[str, Any]:
    changes = [key.removeprefix("run.") for key in NOTICE_KEYS.values()]
    results = t.results_exchange
    return {
        "events": _channel(
            "{eventType}",
            f"The Channel Manager's topic exchange `{t.events_exchange}` (not prefixed; "
            "`JOBMANAGER_EVENTS_EXCHANGE`). The routing key is the event type.",
            _exchange(t.events_exchange, "topic"),
            ["Event"],
            {"eventType": {"description": "The event type, e.g. `channel.updated`."}},
        ),
        "eventsQueue": _channel(
            t.events_queue,
            f"Quorum queue bound to `{t.events_exchange}` with `JOBMANAGER_EVENTS_BINDING` "
            f"(default `{t.events_binding}`). Invalid events are parked in `{t.dead_queue}`; "
            "duplicates (same `source` and `event_id`) are acknowledged and ignored.",
            _queue(t, t.events_queue),
            ["Event"],
        ),
        "delay": _channel(
            "{delayKey}",
            f"Entry of the delay stage (`{t.delay_entry}`): one topic exchange and one classic "
            f"queue with a queue-level TTL of 2^n ms per level n = {delays.MIN_LEVEL} to "
            f"{delays.MAX_LEVEL}, each dead-lettering into the level below and the last into "
            f"`{t.due_queue}` (level {delays.MIN_LEVEL + 1}'s queue, say, is "
            f"`{t.delay_queue(delays.MIN_LEVEL + 1)}` with the arguments "
            f"`{json.dumps(t.delay_queue_arguments(delays.MIN_LEVEL + 1))}`). Executors never "
            "touch it.",
            _exchange(t.delay_entry, "topic"),
            ["JobRequest"],
            {
                "delayKey": {
                    "description": "The remaining delay in binary, one word (`0` or `1`) per "
                    f"level from 2^{delays.MAX_LEVEL} ms down to 2^{delays.MIN_LEVEL} ms."
                }
            },
        ),
        "due": _channel(
            t.due_queue,
            "Quorum queue of job requests that are due: the matcher's gate dispatches each one "
            "that is still wanted (its `token` is the run's current one) to the work queue.",
            _queue(t, t.due_queue),
            ["JobRequest"],
        ),
        "work": _channel(
            t.work_queue,
            "Quorum queue the executors share (competing consumers, prefetch = concurrency, "
            "manual acks after the result is published). A request is delivered at most "
            f"{WORK_DELIVERY_LIMIT + 1} times, then dead-lettered to `{t.lost_queue}`.",
            _queue(t, t.work_queue),
            ["JobRequest"],
        ),
        "workLost": _channel(
            t.lost_queue,
            "Job requests the broker gave up on (their executor died too often): the matcher "
            "ends their runs as Failed.",
            _queue(t, t.lost_queue),
            ["JobRequest"],
        ),
        "runStarted": _channel(
            "run.started",
            f"`{results}` topic exchange: a script is still running "
            "`JOBMANAGER_REPORT_STARTED_AFTER_S` after it began (the ledger marks the run "
            "running); a shorter one is reported only by its result.",
            _exchange(results, "topic"),
            ["RunStarted"],
        ),
        "runSucceeded": _channel(
            "run.succeeded",
            f"`{results}` topic exchange: an attempt succeeded (Result 3).",
            _exchange(results, "topic"),
            ["JobResult"],
        ),
        "runFailed": _channel(
            "run.failed",
            f"`{results}` topic exchange: an attempt failed (Result 2).",
            _exchange(results, "topic"),
            ["JobResult"],
        ),
        "executorReport": _channel(
            ExecutorReport.routing_key,
            f"`{results}` topic exchange: each executor's scripts and load, at start and "
            "periodically (the catalogue the admin API checks jobs against).",
            _exchange(results, "topic"),
            ["ExecutorReport"],
        ),
        "resultsQueue": _channel(
            t.results_queue,
            f"The matcher's quorum queue on `{results}` (bound to `run.*` and `executor.*`): "
            "the ledger's input. Other subscribers bind queues of their own.",
            _queue(t, t.results_queue),
            ["RunStarted", "JobResult", "ExecutorReport"],
        ),
        "runs": _channel(
            "run.{change}",
            f"`{t.runs_exchange}` topic exchange: every state change of a run, for "
            "integrations (`run.started`: the run is running). Published without "
            "`mandatory`: nobody has to listen.",
            _exchange(t.runs_exchange, "topic"),
            ["RunNotice"],
            {"change": {"enum": changes, "description": "What happened to the run."}},
        ),
        "jobs": _channel(
            "job.{change}",
            f"`{t.runs_exchange}` topic exchange too: a job was paused (by an operator, an "
            "apply file or the circuit breaker) or resumed. Published without `mandatory`.",
            _exchange(t.runs_exchange, "topic"),
            ["JobNotice"],
            {"change": {"enum": ["paused", "resumed"], "description": "What happened."}},
        ),
        "control": _channel(
            None,
            f"`{t.control_exchange}` fanout exchange: jobs or settings changed; every matcher "
            "binds an exclusive queue of its own and reloads its catalogue.",
            _exchange(t.control_exchange, "fanout"),
            ["ControlMessage"],
        ),
        "cancel": _channel(
            None,
            f"`{t.executor_control_exchange}` fanout exchange: an operator cancelled a "
            "dispatched or running run, which the ledger has already ended as Failed. Every "
            "executor binds an exclusive, auto-delete queue of its own (server-named). The "
            "executor running the attempt sends SIGTERM to the script's process group and "
            "SIGKILL to what is left of it after `grace_s`; it may then publish the "
            "attempt's `run.failed`, whose Feedback is recorded when it begins with "
            "`cancelled by {by}` (saying how the script ended). An executor that is handed "
            "the attempt's request later acknowledges it without running it, so an executor "
            "keeps the attempts it heard of for a while (the Python executor: the last "
            "10,000). Published without `mandatory`, and consumed without acks: a cancel "
            "is sent again when a cancelled attempt reports a start, and by the matcher's "
            "upkeep while no executor has answered it.",
            _exchange(t.executor_control_exchange, "fanout"),
            ["CancelRequest"],
        ),
        "dead": _channel(
            t.dead_queue,
            "Quorum queue of parked messages, for operators (counted by the admin API).",
            _queue(t, t.dead_queue),
            ["Parked"],
        ),
    }


# (operation id, action, channel, messages, service, summary)
_OPERATIONS: tuple[tuple[str, str, str, tuple[str, ...], str, str], ...] = (
    ("receiveEvents", "receive", "eventsQueue", ("Event",), "matcher",
     "Validate, de-duplicate and match events; record the event and its runs."),
    ("scheduleRequest", "send", "delay", ("JobRequest",), "matcher",
     "Publish a lane's head run, delayed until its slot (also the admin service)."),
    ("sendDue", "send", "due", ("JobRequest",), "matcher",
     "Publish a request due within the stage's granularity (also Execute Now in the admin)."),
    ("receiveDue", "receive", "due", ("JobRequest",), "matcher",
     "The gate: drop stale requests, mark the run dispatched, forward it to the executors."),
    ("sendWork", "send", "work", ("JobRequest",), "matcher",
     "The gate dispatches a run to the executors (with the event, for executables)."),
    ("receiveWork", "receive", "work", ("JobRequest",), "executor",
     "Run the script; publish run.started, then the result, then acknowledge."),
    ("sendRunStarted", "send", "runStarted", ("RunStarted",), "executor",
     "The script began."),
    ("sendRunSucceeded", "send", "runSucceeded", ("JobResult",), "executor",
     "The script succeeded."),
    ("sendRunFailed", "send", "runFailed", ("JobResult",), "executor",
     "The script failed, timed out or could not start."),
    ("sendExecutorReport", "send", "executorReport", ("ExecutorReport",), "executor",
     "Report the scripts this executor runs, and its load."),
    ("receiveResults", "receive", "resultsQueue",
     ("RunStarted", "JobResult", "ExecutorReport"), "matcher",
     "Record results in the ledger (retry or finish the run) and move the lane on."),
    ("receiveLost", "receive", "workLost", ("JobRequest",), "matcher",
     "End runs whose request the broker gave up on as Failed."),
    ("sendRunNotice", "send", "runs", ("RunNotice",), "matcher",
     "Announce a run's new state (also the admin service, for operator actions)."),
    ("sendJobNotice", "send", "jobs", ("JobNotice",), "matcher",
     "Announce that the circuit breaker paused a job (the admin service: pause, resume)."),
    ("sendControl", "send", "control", ("ControlMessage",), "admin",
     "Tell every matcher that jobs or settings changed."),
    ("receiveControl", "receive", "control", ("ControlMessage",), "matcher",
     "Reload the job catalogue and the settings."),
    ("sendCancel", "send", "cancel", ("CancelRequest",), "admin",
     "Tell the executors to stop a cancelled run's attempt (also the matcher, sending it "
     "again when the attempt reports a start)."),
    ("receiveCancel", "receive", "cancel", ("CancelRequest",), "executor",
     "Stop the attempt if it runs here (SIGTERM, SIGKILL after grace_s); never run it later."),
    ("park", "send", "dead", ("Parked",), "matcher",
     "Park a message that cannot be handled, with its reason (executors do too)."),
)  # fmt: skip


def operations() -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for op_id, action, channel, messages, service, summary in _OPERATIONS:
        binding: dict[str, Any] = {"bindingVersion": AMQP_BINDING}
        if action == "send":
            binding["deliveryMode"] = 2  # persistent, published with publisher confirms
        else:
            # Acknowledged only after the outcome is committed; a cancel is not acknowledged
            # at all (it is sent again until answered).
            binding["ack"] = op_id != "receiveCancel"
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "tags": [{"name": service}],
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{_message_key(m)}"} for m in messages
            ],
            "bindings": {"amqp": binding},
        }
    return operations
