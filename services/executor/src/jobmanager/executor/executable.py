"""Running an executable script (any language) under the script contract.

The executable is started by path with no arguments and no shell, in its own process group,
with a minimal environment. The request arrives as one JSON object on stdin; event data never
reaches argv. Its stdout and stderr are read concurrently into bounded tails; its last
non-empty stdout line may report the result as JSON, otherwise the exit code decides.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from jobmanager.core.messages import CancelRequest, JobRequest, ResultCode
from jobmanager.executor.outcome import Outcome, cancel_feedback, describe_exit, timeout_feedback
from jobmanager.executor.output import TailBuffer, combine, result_line, shorten, shorten_tail
from jobmanager.executor.process import Child, spawn
from jobmanager.executor.scripts import Script

CHUNK = 65536


def request_document(request: JobRequest) -> bytes:
    """The JSON object an executable reads on stdin."""
    document = {
        "command": request.command,
        "run_id": request.run_id,
        "attempt": request.attempt,
        "job": request.job.name,
        "event": request.event,
    }
    return json.dumps(document, ensure_ascii=False).encode("utf-8") + b"\n"


async def _pump(stream: asyncio.StreamReader, tail: TailBuffer) -> None:
    while chunk := await stream.read(CHUNK):
        tail.feed(chunk)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    # A script may exit, or never read its input: neither is an error of the run.
    with suppress(ConnectionError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()


async def _settle(child: Child, readers: list[asyncio.Task[None]]) -> None:
    await child.exit_status()
    # EOF follows the kill at once, unless a child escaped the group and holds a pipe.
    await asyncio.wait(readers, timeout=1.0)
    for reader in readers:
        reader.cancel()


async def run_executable(
    script: Script,
    request: JobRequest,
    *,
    env: Mapping[str, str],
    cwd: Path,
    output_bytes: int,
    scan_bytes: int,
    feedback_chars: int,
    drain_s: float,
    cancelled: asyncio.Future[CancelRequest] | None = None,
) -> Outcome:
    """Run one executable to completion, timeout or cancel (`cancelled` completed: SIGTERM
    to its group, SIGKILL after the cancel's grace); never raises for the script's faults."""
    environment = {
        **env,
        "JOB_COMMAND": request.command,
        "JOB_RUN_ID": str(request.run_id),
        "JOB_ATTEMPT": str(request.attempt),
        "JOB_NAME": request.job.name,
    }
    try:
        child = await spawn(script.path, env=environment, cwd=cwd)
    except ValueError as exc:  # a NUL byte in the command cannot go into the environment
        return Outcome.failed(f"could not start {script.name}: {exc}")
    except OSError as exc:  # no shebang, not permitted, argument list too long, ...
        return Outcome.failed(f"could not start {script.name}: {exc.strerror or exc}")
    stdout, stderr = TailBuffer(scan_bytes), TailBuffer(output_bytes)
    readers = [
        asyncio.create_task(_pump(child.stdout, stdout)),
        asyncio.create_task(_pump(child.stderr, stderr)),
    ]
    feeder = asyncio.create_task(_feed(child.stdin, request_document(request)))
    timed_out = False
    stopped: tuple[CancelRequest, bool] | None = None
    exited = asyncio.ensure_future(child.exit_status())
    try:
        waiting: list[asyncio.Future[Any]] = [exited]
        if cancelled is not None:
            waiting.append(cancelled)
        await asyncio.wait(
            waiting,
            timeout=request.timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if exited.done():
            returncode = exited.result()
        elif cancelled is not None and cancelled.done() and not cancelled.cancelled():
            cancel = cancelled.result()
            stopped = (cancel, await child.terminate(cancel.grace_s))
            returncode = await child.exit_status()
        else:
            timed_out = True
            child.kill_group()
            returncode = await child.exit_status()
        # Children left behind may hold the pipes open: read a little longer, not forever.
        await asyncio.wait(readers, timeout=drain_s)
    finally:
        # A run's processes do not outlive it (also when the executor stops hard).
        child.kill_group()
        exited.cancel()
        feeder.cancel()
        child.stdin.close()
        await asyncio.shield(_settle(child, readers))
    stdout_bytes = stdout.data()
    output = combine(stdout.text(output_bytes), stderr.text(), output_bytes)
    if stopped is not None:
        return Outcome.failed(cancel_feedback(stopped[0], killed=stopped[1]), output)
    if timed_out:
        return Outcome.failed(timeout_feedback(request.timeout_s), output)
    reported = result_line(stdout_bytes)
    if reported is not None:
        code, feedback = reported
        return Outcome(ResultCode(code), shorten(feedback, feedback_chars), output)
    if returncode == 0:
        return Outcome(ResultCode.SUCCEEDED, "", output)
    errors = stderr.text().strip()
    feedback = f"{script.name} {describe_exit(returncode)}"
    if errors:
        feedback += ": " + shorten_tail(errors, max(100, feedback_chars - len(feedback) - 2))
    return Outcome.failed(feedback, output)
