"""Runs one job request: finds the script in the catalogue and runs it under the contract.

`Runner.run` always returns an `Outcome`: an unknown script, a script that raises, times out
or crashes its process, and even a fault of the executor itself all end as a Failed result
with Feedback saying why, so that every valid request ends with a recorded result.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jobmanager.core.messages import CancelRequest, JobRequest, ResultCode
from jobmanager.executor.config import ExecutorSettings
from jobmanager.executor.executable import run_executable
from jobmanager.executor.outcome import Outcome, cancel_feedback, describe_exit, timeout_feedback
from jobmanager.executor.output import combine, shorten
from jobmanager.executor.pool import (
    PACKAGE_ROOT,
    WorkerCancelled,
    WorkerDied,
    WorkerPool,
    WorkerTimeout,
)
from jobmanager.executor.scripts import Script, ScriptCatalogue, valid_name

log = logging.getLogger(__name__)


class Runner:
    """Runs scripts of one scripts directory, at most `concurrency` Python scripts at once."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.scripts = ScriptCatalogue(settings.scripts_dir)
        # Scripts get a minimal environment: nothing of the executor's (broker URL, tokens).
        self.env = settings.script_environment()
        worker_env = {
            **self.env,
            "PYTHONPATH": str(PACKAGE_ROOT),
            # Importing a script must not write __pycache__ into the scripts directory.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.pool = WorkerPool(
            settings.concurrency,
            env=worker_env,
            cwd=settings.scripts_dir,
            tail_bytes=settings.output_tail_bytes,
        )

    async def run(
        self, request: JobRequest, cancelled: asyncio.Future[CancelRequest] | None = None
    ) -> Outcome:
        """Run the request's script, stopping it if `cancelled` completes; the outcome,
        never an exception (except the task's own cancellation)."""
        try:
            script = self.scripts.get(request.script)
            if script is None:
                return self._unknown(request.script)
            if script.kind == "python":
                return await self._run_python(script, request, cancelled)
            return await run_executable(
                script,
                request,
                env=self.env,
                cwd=self.settings.scripts_dir,
                output_bytes=self.settings.output_tail_bytes,
                scan_bytes=self.settings.result_scan_bytes,
                feedback_chars=self.settings.feedback_max_chars,
                drain_s=self.settings.exit_drain_s,
                cancelled=cancelled,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "executor error running %r",
                request.script,
                extra={"run_id": request.run_id, "event_id": request.event_id},
            )
            return Outcome.failed(f"executor error: {type(exc).__name__}: {exc}")

    def _unknown(self, name: str) -> Outcome:
        known = ", ".join(self.scripts.names()) or "none"
        if not valid_name(name):
            return Outcome.failed(
                f"refused script name {name!r}: a script name is letters, digits, '_' and '-' "
                f"and starts with a letter or digit; known scripts: {known}"
            )
        return Outcome.failed(
            f"unknown script {name!r}: not in the scripts directory "
            f"{self.settings.scripts_dir}; known scripts: {known}"
        )

    async def _run_python(
        self,
        script: Script,
        request: JobRequest,
        cancelled: asyncio.Future[CancelRequest] | None,
    ) -> Outcome:
        payload = {
            "path": str(script.path),
            "command": request.command,
            "tail_bytes": self.settings.output_tail_bytes,
            "ctx": {
                "run_id": request.run_id,
                "attempt": request.attempt,
                "job": request.job.name,
                "lane": request.lane,
                "event": request.event,
                "script": script.name,
            },
        }
        limit = self.settings.output_tail_bytes
        try:
            reply = await self.pool.call(payload, request.timeout_s, cancelled)
        except WorkerCancelled as exc:
            return Outcome.failed(cancel_feedback(exc.cancel, killed=exc.killed), exc.stderr_tail)
        except WorkerTimeout as exc:
            return Outcome.failed(timeout_feedback(request.timeout_s), exc.stderr_tail)
        except WorkerDied as exc:
            return Outcome.failed(
                f"the script process exited unexpectedly: it {describe_exit(exc.returncode)} "
                "during the run (os._exit, a crash or a signal); the executor replaced it",
                exc.stderr_tail,
            )
        except OSError as exc:
            return Outcome.failed(f"could not start a Python worker: {exc}")
        return self._from_reply(reply, limit)

    def _from_reply(self, reply: dict[str, Any], limit: int) -> Outcome:
        code = reply.get("result")
        if code not in (ResultCode.FAILED, ResultCode.SUCCEEDED):
            return Outcome.failed(f"executor error: bad reply from a Python worker: {code!r}")
        feedback = shorten(str(reply.get("feedback", "")), self.settings.feedback_max_chars)
        output = combine(str(reply.get("output", "")), str(reply.get("stderr", "")), limit)
        return Outcome(ResultCode(code), feedback, output)

    async def close(self) -> None:
        """Stop the Python workers (after the runs ended)."""
        await self.pool.close()
