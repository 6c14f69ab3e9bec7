"""What running one script produced, and the wording of the executor's own Feedback."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from jobmanager.core.messages import CancelRequest, ResultCode


@dataclass(frozen=True)
class Outcome:
    """The result code, Feedback and bounded output tail of one run."""

    result: ResultCode
    feedback: str = ""
    output_tail: str = ""

    @classmethod
    def failed(cls, feedback: str, output_tail: str = "") -> Outcome:
        return cls(ResultCode.FAILED, feedback, output_tail)

    @property
    def succeeded(self) -> bool:
        return self.result is ResultCode.SUCCEEDED


def describe_exit(returncode: int) -> str:
    """`exited with code 7` or `was killed by signal SIGSEGV`."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by signal {name}"


def timeout_feedback(timeout_s: float) -> str:
    return f"timed out after {float(timeout_s)!r} s; the script and its child processes were killed"


def cancel_feedback(cancel: CancelRequest, *, killed: bool | None) -> str:
    """The Feedback of a cancelled attempt. It begins with the ledger's own ("cancelled by
    …"), which is what lets the ledger take it as the cancel's account of how the script
    ended (`killed` None: it had not started)."""
    if killed is None:
        ending = "the script had not started"
    elif killed:
        ending = (
            f"the script was still running {float(cancel.grace_s)!r} s after SIGTERM "
            "and was killed (SIGKILL)"
        )
    else:
        ending = "the script ended on SIGTERM"
    return f"cancelled by {cancel.by}; {ending}"
