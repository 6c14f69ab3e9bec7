"""Where the time goes: py-spy on the matcher and an executor during one extra saturation run.

`python -m bench.run --profile DIR` (py-spy must be on PATH, e.g. `uv run --with py-spy`).
The profiled repetition is not one of the timed ones. py-spy samples without pausing the
process (`--nonblocking`) and, by default, only threads that are running, so the samples of
a process over the run's wall time approximate its CPU use. The summary gives, per process,
that share, the self time by library and the functions with the most inclusive time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import tree_seconds
from bench.stack import Stack

RATE_HZ = 100
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
LIBRARIES = [
    ("sqlalchemy", "sqlalchemy"),
    ("asyncpg", "asyncpg"),
    ("aio-pika/aiormq/pamqp", "aio_pika|aiormq|pamqp"),
    ("pydantic", "pydantic"),
    ("jinja2", "jinja2"),
    ("jobmanager", "jobmanager"),
    ("logging", "(^|/)logging/"),
    ("asyncio event loop", "(^|/)asyncio/|selectors|uvloop"),
    ("json", "(^|/)json/"),
]


def _library(path: str) -> str:
    for name, pattern in LIBRARIES:
        if re.search(pattern, path):
            return name
    return "other (stdlib, C)"


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["func"], match["file"]


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


@dataclass
class Summary:
    name: str
    seconds: float
    cpu_seconds: float  # from /proc, the process and its children
    samples: int = 0
    by_library: Counter[str] = field(default_factory=Counter)
    library_inclusive: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    @property
    def active(self) -> float:
        """Samples over what an always-active thread would give. py-spy counts a thread as
        active while it is runnable, also when the kernel has handed its core to another
        process, so on a loaded machine this exceeds the CPU share."""
        return self.samples / (self.seconds * RATE_HZ)

    def render(self, top: int = 20) -> str:
        lines = [
            f"### {self.name}",
            "",
            f"CPU {self.cpu_seconds / self.seconds:.0%} of one core over {self.seconds:.1f} s "
            f"(from /proc; with its children); {self.samples:,} py-spy samples at {RATE_HZ} Hz, "
            f"active {self.active:.0%} of the time (runnable counts, preempted or not)",
            "",
            "By library: self (the innermost frame is in it) and inclusive (any frame is). "
            "SQLAlchemy's async bridge runs statements in greenlets, whose stacks py-spy "
            "shows without the frames that called them, so a function's inclusive share "
            "misses its database work; the libraries' inclusive shares do not.",
            "",
            "| library | self | inclusive |",
            "|---|---|---|",
        ]
        for library, count in self.by_library.most_common():
            share = self.library_inclusive[library] / self.samples
            inclusive = "-" if library.startswith("other") else f"{share:.0%}"
            lines.append(f"| {library} | {count / self.samples:.0%} | {inclusive} |")
        lines += ["", f"Top {top} functions by inclusive time:", "", "| function | share |"]
        lines.append("|---|---|")
        for function, count in self.inclusive.most_common(top):
            lines.append(f"| `{function}` | {count / self.samples:.0%} |")
        return "\n".join(lines) + "\n"


def summarize(name: str, raw: Path, seconds: float, cpu_seconds: float) -> Summary:
    summary = Summary(name, seconds, cpu_seconds)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";")]
        # A process line ("process 123:...") heads each stack with --subprocesses.
        frames = [f for f in frames if f[1]] or frames
        summary.samples += count
        summary.by_library[_library(frames[-1][1])] += count
        for library in {_library(path) for _, path in frames}:
            summary.library_inclusive[library] += count
        for function in {f"{func} ({_short(path)})" for func, path in frames}:
            summary.inclusive[function] += count
    return summary


@dataclass
class Profiler:
    outdir: Path
    executable: str = ""
    summaries: list[Summary] = field(default_factory=list)

    def __post_init__(self) -> None:
        found = self.executable or shutil.which("py-spy")
        if not found:
            raise SystemExit(
                "--profile needs py-spy on PATH: "
                "uv run --frozen --group bench --with py-spy python -m bench.run --profile DIR"
            )
        self.executable = found
        self.outdir.mkdir(parents=True, exist_ok=True)

    async def around(self, stack: Stack, repetition: Callable[[], Awaitable[float]]) -> None:
        targets = {
            "matcher": (stack.matchers[0].pid, []),
            "executor": (stack.executors[0].pid, ["--subprocesses"]),
        }
        spies = {}
        for name, (pid, extra) in targets.items():
            out = (self.outdir / f"{name}.log").open("wb")
            spies[name] = subprocess.Popen(
                [
                    self.executable,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE_HZ),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(self.outdir / f"{name}.txt"),
                    *extra,
                ],
                stdout=out,
                stderr=out,
            )
        start = time.perf_counter()
        before = {name: tree_seconds(pid) for name, (pid, _) in targets.items()}
        await asyncio.sleep(1.0)  # attached
        rate = await repetition()
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        seconds = time.perf_counter() - start
        used = {name: tree_seconds(pid) - before[name] for name, (pid, _) in targets.items()}
        for spy in spies.values():
            await asyncio.to_thread(spy.wait, 30)
        self.summaries = [
            summarize(
                f"{name} ({rate:.0f} runs/s while profiled)",
                self.outdir / f"{name}.txt",
                seconds,
                used[name],
            )
            for name in targets
        ]
        text = "\n".join(s.render() for s in self.summaries)
        (self.outdir / "summary.md").write_text(text)
