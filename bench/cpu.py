"""CPU accounting from /proc: who used the machine's cores during a measurement.

On a 2-core machine the pipeline's throughput is what the cores allow, so CPU time per run,
split by process (matcher, executors with their workers, Postgres, RabbitMQ, the driver) and
compared with the machine's total, says where the time goes. Postgres and RabbitMQ are
shared: their figures include whatever else used them meanwhile, and "others" is the rest of
the machine (other people's tests on this machine).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.infra import descendants

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_seconds(pid: int, *, reaped_children: bool = True) -> float:
    """User + system CPU seconds of a process (with its reaped children's)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After "pid (comm) ": state is field 0; utime 11, stime 12, cutime 13, cstime 14.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def tree_seconds(pid: int) -> float:
    return process_seconds(pid) + sum(process_seconds(c) for c in descendants(pid))


def _named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def named_seconds(name: str) -> dict[int, float]:
    """CPU seconds of each live process with this command name, by pid."""
    return {p: process_seconds(p, reaped_children=False) for p in _named(name)}


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / TICK, total / TICK


def _sched_seconds(pid: int) -> tuple[float, float]:
    """(on a core, runnable but waiting for one) seconds so far, over a process's threads."""
    on = waiting = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        on, waiting = on + int(fields[0]), waiting + int(fields[1])
    return on / 1e9, waiting / 1e9


def sched_sample(parts: Mapping[str, list[int]]) -> dict[str, dict[int, tuple[float, float]]]:
    """`_sched_seconds` of each process of each part (part name: pids)."""
    return {name: {p: _sched_seconds(p) for p in pids} for name, pids in parts.items()}


def sched_shares(
    before: Mapping[str, Mapping[int, tuple[float, float]]],
    after: Mapping[str, Mapping[int, tuple[float, float]]],
    wall_s: float,
) -> dict[str, tuple[float, float]]:
    """Per part, the shares of the wall time its processes together ran on a core and were
    runnable but waited for one (the kernel's run-queue delay). On a machine with few cores,
    the wait is what each step of a run pays when every core is taken."""
    shares = {}
    for name, pids in after.items():
        earlier = before.get(name, {})
        on = sum(v[0] - earlier.get(p, (0.0, 0.0))[0] for p, v in pids.items())
        waiting = sum(v[1] - earlier.get(p, (0.0, 0.0))[1] for p, v in pids.items())
        shares[name] = (on / wall_s, waiting / wall_s)
    return shares


def postgres_pids() -> list[int]:
    return _named("postgres")


@dataclass(frozen=True)
class Sample:
    parts: Mapping[str, Mapping[int, float]]  # part -> pid -> CPU seconds
    busy: float
    total: float


def sample(trees: Mapping[str, list[int]]) -> Sample:
    """CPU seconds so far of our process trees (by name), Postgres's and RabbitMQ's
    processes, the driver, and the machine."""
    parts: dict[str, Mapping[int, float]] = {
        name: {p: tree_seconds(p) for p in pids} for name, pids in trees.items()
    }
    parts["postgres"] = named_seconds("postgres")
    parts["rabbitmq"] = named_seconds("beam.smp")
    parts["driver"] = {os.getpid(): process_seconds(os.getpid())}
    busy, total = machine_seconds()
    return Sample(parts, busy, total)


@dataclass(frozen=True)
class Usage:
    """CPU milliseconds per unit of work (per run, per task), by part, over an interval."""

    per_unit_ms: dict[str, float]
    machine_busy: float  # share of all cores in use, 0..1

    def note(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.per_unit_ms.items())
        return f"CPU ms per run: {parts}; cores {self.machine_busy:.0%} busy"


def usage(before: Sample, after: Sample, units: int) -> Usage:
    per = {}
    for name, pids in after.parts.items():
        earlier = before.parts.get(name, {})
        # Processes that started meanwhile count whole; those that ended are lost (few).
        spent = sum(seconds - earlier.get(pid, 0.0) for pid, seconds in pids.items())
        per[name] = spent * 1000 / units
    machine = (after.busy - before.busy) * 1000 / units
    per["others"] = max(0.0, machine - sum(per.values()))
    per["machine"] = machine
    total = after.total - before.total
    return Usage(per, (after.busy - before.busy) / total if total else 0.0)
