"""A render worker: `python -m jobmanager.jobs.render_worker CPU_S MEMORY_BYTES`.

The child side of `jobmanager.jobs.renderer`. It renders one job's command and lane per
request frame, read from stdin, and answers each with one frame on stdout, within two limits
that only a process of its own can keep:

* memory: the address space is capped at what the worker uses once started plus
  MEMORY_BYTES (`RLIMIT_AS`), so a template that builds a huge string gets a MemoryError
  instead of growing the service that asked for it;
* CPU time: an `ITIMER_PROF` timer of CPU_S per render raises in the template's Python code.
  Code that never returns to Python cannot be interrupted so; the parent's wall-clock
  backstop kills the worker then.

A worker that hit the memory limit answers and exits, so that no worker carries on with a
heap the runaway template fragmented; the parent starts another.

Frames are a 4-byte big-endian length and a JSON document. A request is
``{"d": event document (left out: the previous request's), "c": command, "l": lane}``; an
answer is ``{"c": command, "l": lane}`` or ``{"e": error, "k": limit hit or null}`` (with
``"c"`` when the command rendered and the lane did not).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

from jobmanager.jobs.templating import TemplateError, render_command, render_lane

HEADER = struct.Struct(">I")
CPU = "cpu"
MEMORY = "memory"
READY = {"ready": True}


class CpuTimeExceeded(BaseException):
    """Raised by the timer in the template's code. A BaseException, so that neither Jinja2
    nor the templating module's handlers turn it into an ordinary template error."""


def _on_timer(signum: int, frame: object) -> None:
    raise CpuTimeExceeded


def encode(document: Any) -> bytes:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def _address_space() -> int:
    """The bytes of address space the process holds now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def limit_memory(memory_bytes: int) -> None:
    """Cap the address space at what is mapped now plus `memory_bytes`."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = _address_space() + memory_bytes
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def limit_message(limit: str, *, cpu_s: float, memory_bytes: int) -> str:
    """How a render that hit a limit is reported (by the worker and by the parent)."""
    if limit == CPU:
        return f"rendering exceeded the CPU time limit ({cpu_s:g} s)"
    return f"rendering exceeded the memory limit ({memory_bytes >> 20} MiB)"


def render_one(
    request: dict[str, Any], document: dict[str, Any], *, cpu_s: float, memory_bytes: int
) -> dict[str, Any]:
    """One job's command and lane for one event, within `cpu_s` of CPU time."""
    what, command = "command template", None
    try:
        signal.setitimer(signal.ITIMER_PROF, cpu_s)
        try:
            command = render_command(request["c"], document)
            what = "lane template"
            lane = render_lane(request["l"], document)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except TemplateError as exc:
        error, limit = str(exc), None
    except CpuTimeExceeded:
        error, limit = f"{what}: {limit_message(CPU, cpu_s=cpu_s, memory_bytes=0)}", CPU
    except MemoryError:
        command = None  # let go of what the bomb built before answering
        message = limit_message(MEMORY, cpu_s=0, memory_bytes=memory_bytes)
        error, limit = f"{what}: {message}", MEMORY
    else:
        return {"c": command, "l": lane}
    # A command that rendered before its lane failed is shown by a dry run.
    return {"e": error, "k": limit} | ({} if command is None else {"c": command})


def serve(stdin: BinaryIO, stdout: BinaryIO, *, cpu_s: float, memory_bytes: int) -> int:
    document: dict[str, Any] = {}
    while True:
        header = stdin.read(HEADER.size)
        if len(header) < HEADER.size:
            return 0  # the parent closed our input: its pool is closing
        body = stdin.read(HEADER.unpack(header)[0])
        try:
            request = json.loads(body)
            del body
            if "d" in request:
                document = request["d"]
            answer = render_one(request, document, cpu_s=cpu_s, memory_bytes=memory_bytes)
        except MemoryError:  # the event itself did not fit beside the worker
            message = limit_message(MEMORY, cpu_s=cpu_s, memory_bytes=memory_bytes)
            answer = {"e": f"event document: {message}", "k": MEMORY}
        stdout.write(encode(answer))
        stdout.flush()
        if answer.get("k") == MEMORY:
            return 0


def main() -> int:
    cpu_s, memory_bytes = float(sys.argv[1]), int(sys.argv[2])
    # Frames go to a copy of fd 1; anything else written to stdout goes to stderr instead.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGPROF, _on_timer)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the service's to handle
    render_command("{{ event_id }}{{ data | tojson }}", {"event_id": "warm-up", "data": {}})
    limit_memory(memory_bytes)
    stdout.write(encode(READY))
    stdout.flush()
    return serve(sys.stdin.buffer, stdout, cpu_s=cpu_s, memory_bytes=memory_bytes)


if __name__ == "__main__":
    sys.exit(main())
