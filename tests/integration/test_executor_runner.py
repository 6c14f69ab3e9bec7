"""The runner against real subprocesses: Python workers and executables (no broker)."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobmanager.core.messages import JobRef, JobRequest, ResultCode
from jobmanager.executor.config import ExecutorSettings
from jobmanager.executor.runner import Runner

EVENT = {"event_id": "e-1", "event_type": "channel.updated", "data": {"x": 1}}


def request(
    script: str, command: str = "", *, timeout_s: float = 10.0, run_id: int = 1
) -> JobRequest:
    now = datetime.now(UTC)
    return JobRequest(
        run_id=run_id,
        attempt=2,
        job=JobRef(id=5, name="the-job"),
        script=script,
        command=command,
        timeout_s=timeout_s,
        lane="lane-a",
        event_id="e-1",
        not_before=now,
        requested_at=now,
        event=EVENT,
    )


def python_script(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def executable(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source).lstrip())
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (nobody may reap it in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    directory = tmp_path / "scripts"
    directory.mkdir()
    return directory


@pytest.fixture
async def runner(scripts: Path) -> AsyncIterator[Runner]:
    settings = ExecutorSettings(scripts_dir=scripts, concurrency=1, output_tail_bytes=2048)
    the_runner = Runner(settings)
    try:
        yield the_runner
    finally:
        await the_runner.close()


# Python scripts ---------------------------------------------------------------------------


async def test_python_success_and_failure(runner: Runner, scripts: Path) -> None:
    python_script(
        scripts,
        "good",
        """
        def run(command, ctx):
            print("working on", command)
            ctx.log("logged")
            return 3, f"did {command}"
    """,
    )
    python_script(
        scripts,
        "bad",
        """
        def run(command, ctx):
            return {"result": 2, "feedback": "input rejected"}
    """,
    )
    good = await runner.run(request("good", "thing"))
    assert (good.result, good.feedback) == (ResultCode.SUCCEEDED, "did thing")
    assert good.output_tail == "working on thing\nlogged"
    bad = await runner.run(request("bad"))
    assert (bad.result, bad.feedback) == (ResultCode.FAILED, "input rejected")


async def test_context_fields(runner: Runner, scripts: Path) -> None:
    python_script(
        scripts,
        "show",
        """
        import json
        def run(command, ctx):
            return 3, json.dumps([ctx.run_id, ctx.attempt, ctx.job, ctx.lane, ctx.event,
                                  ctx.script])
    """,
    )
    outcome = await runner.run(request("show", run_id=77))
    assert json.loads(outcome.feedback) == [77, 2, "the-job", "lane-a", EVENT, "show"]


async def test_exception_and_bad_return_value(runner: Runner, scripts: Path) -> None:
    python_script(
        scripts,
        "raises",
        """
        def run(command, ctx):
            raise ValueError("boom: " + command)
    """,
    )
    python_script(
        scripts,
        "returns_junk",
        """
        def run(command, ctx):
            return "yes"
    """,
    )
    python_script(
        scripts,
        "returns_five",
        """
        def run(command, ctx):
            return 5, "five"
    """,
    )
    python_script(scripts, "broken", "def run(:\n")
    raised = await runner.run(request("raises", "x"))
    assert (raised.result, raised.feedback) == (ResultCode.FAILED, "ValueError: boom: x")
    assert "Traceback" in raised.output_tail
    junk = await runner.run(request("returns_junk"))
    assert junk.result is ResultCode.FAILED
    assert junk.feedback.startswith("bad return value from run(): 'yes'")
    five = await runner.run(request("returns_five"))
    assert five.feedback.startswith("bad result code from run(): 5")
    broken = await runner.run(request("broken"))
    assert broken.result is ResultCode.FAILED
    assert broken.feedback.startswith("SyntaxError:")


async def test_async_run(runner: Runner, scripts: Path) -> None:
    python_script(
        scripts,
        "coro",
        """
        import asyncio
        async def run(command, ctx):
            await asyncio.sleep(0.01)
            return 3, "awaited"
    """,
    )
    outcome = await runner.run(request("coro"))
    assert (outcome.result, outcome.feedback) == (ResultCode.SUCCEEDED, "awaited")


async def test_workers_are_reused_and_scripts_reloaded_when_changed(
    runner: Runner, scripts: Path
) -> None:
    python_script(
        scripts,
        "pid",
        """
        import os
        def run(command, ctx):
            return 3, str(os.getpid())
    """,
    )
    first = await runner.run(request("pid"))
    second = await runner.run(request("pid"))
    assert first.feedback == second.feedback
    assert runner.pool.started == 1
    python_script(
        scripts,
        "pid",
        """
        def run(command, ctx):
            return 3, "version 2"
    """,
    )
    os.utime(scripts / "pid.py", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert (await runner.run(request("pid"))).feedback == "version 2"


async def test_prints_do_not_corrupt_the_protocol(runner: Runner, scripts: Path) -> None:
    python_script(
        scripts,
        "noisy",
        """
        import os, subprocess, sys
        def run(command, ctx):
            os.write(1, b"\\x00\\x00\\x00\\x05junk on fd 1\\n")
            sys.__stdout__.write("to the real stdout\\n")
            sys.__stdout__.flush()
            subprocess.run(["echo", "from a child"], check=True)
            print("after")
            return 3, "still fine"
    """,
    )
    outcome = await runner.run(request("noisy"))
    assert (outcome.result, outcome.feedback) == (ResultCode.SUCCEEDED, "still fine")
    again = await runner.run(request("noisy"))
    assert again.feedback == "still fine"


async def test_output_is_bounded(runner: Runner, scripts: Path) -> None:
    python_script(
        scripts,
        "flood",
        """
        import sys
        def run(command, ctx):
            line = "x" * 999 + "\\n"
            for _ in range(10_000):  # 10 MB
                sys.stdout.write(line)
            print("the end")
            return 3, "flooded"
    """,
    )
    outcome = await runner.run(request("flood"))
    assert outcome.feedback == "flooded"
    assert len(outcome.output_tail) <= 2048
    assert outcome.output_tail.endswith("the end")


async def test_python_timeout_kills_the_group(runner: Runner, scripts: Path) -> None:
    pidfile = scripts.parent / "child.pid"
    python_script(
        scripts,
        "hangs",
        f"""
        import subprocess, time
        def run(command, ctx):
            child = subprocess.Popen(["sleep", "60"])
            with open({str(pidfile)!r}, "w") as f:
                f.write(str(child.pid))
            time.sleep(60)
    """,
    )
    python_script(scripts, "quick", "def run(command, ctx):\n    return 3, 'quick'\n")
    started = time.monotonic()
    outcome = await runner.run(request("hangs", timeout_s=0.5))
    assert time.monotonic() - started < 3
    assert outcome.result is ResultCode.FAILED
    assert outcome.feedback == (
        "timed out after 0.5 s; the script and its child processes were killed"
    )
    assert await gone(int(pidfile.read_text()))
    assert (await runner.run(request("quick"))).feedback == "quick"


@pytest.mark.parametrize(
    ("body", "how"),
    [
        ("os._exit(7)", "exited with code 7"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "was killed by signal SIGKILL"),
        ("ctypes.string_at(0)", "was killed by signal SIGSEGV"),
    ],
)
async def test_a_dying_worker_fails_the_run_only(
    runner: Runner, scripts: Path, body: str, how: str
) -> None:
    python_script(
        scripts,
        "dies",
        f"""
        import ctypes, os, signal
        def run(command, ctx):
            print("about to die")
            {body}
    """,
    )
    python_script(scripts, "after", "def run(command, ctx):\n    return 3, 'alive'\n")
    outcome = await runner.run(request("dies"))
    assert outcome.result is ResultCode.FAILED
    assert outcome.feedback.startswith("the script process exited unexpectedly")
    assert how in outcome.feedback
    if "SIGSEGV" in how:
        assert "Fatal Python error" in outcome.output_tail
    following = await runner.run(request("after"))
    assert (following.result, following.feedback) == (ResultCode.SUCCEEDED, "alive")


# Executables ------------------------------------------------------------------------------


async def test_executable_contract(runner: Runner, scripts: Path) -> None:
    out = scripts.parent
    executable(
        scripts,
        "contract.sh",
        f"""
        #!/bin/sh
        cat > {out}/stdin.json
        env > {out}/env.txt
        echo "$#" > {out}/argc.txt
        pwd > {out}/cwd.txt
        echo "some progress"
        echo '{{"result": 3, "feedback": "contract kept"}}'
    """,
    )
    command = '--help; $(touch pwned) `id` "quoted"'
    outcome = await runner.run(request("contract", command, run_id=9))
    assert (outcome.result, outcome.feedback) == (ResultCode.SUCCEEDED, "contract kept")
    assert outcome.output_tail.startswith("some progress\n")
    document = json.loads((out / "stdin.json").read_text())
    assert document == {
        "command": command,
        "run_id": 9,
        "attempt": 2,
        "job": "the-job",
        "event": EVENT,
    }
    env = dict(
        line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["JOB_COMMAND"] == command
    assert (env["JOB_RUN_ID"], env["JOB_ATTEMPT"]) == ("9", "2")
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert not any(name.startswith(("JOBMANAGER_", "PYTEST", "VIRTUAL_ENV")) for name in env)
    assert (out / "argc.txt").read_text().strip() == "0"
    assert (out / "cwd.txt").read_text().strip() == str(scripts)
    assert not (scripts / "pwned").exists()


async def test_executable_exit_code_fallback(runner: Runner, scripts: Path) -> None:
    executable(
        scripts,
        "fails.sh",
        """
        #!/bin/sh
        echo "not a result line"
        echo "first problem" >&2
        echo "the real problem" >&2
        exit 4
    """,
    )
    executable(scripts, "quiet.sh", "#!/bin/sh\necho done\n")
    executable(
        scripts,
        "bad_line.sh",
        """
        #!/bin/sh
        echo '{"result": 7, "feedback": "not a valid code"}'
        exit 1
    """,
    )
    failed = await runner.run(request("fails"))
    assert failed.result is ResultCode.FAILED
    assert failed.feedback == "fails exited with code 4: first problem\nthe real problem"
    assert failed.output_tail.endswith("[stderr]\nfirst problem\nthe real problem")
    quiet = await runner.run(request("quiet"))
    assert (quiet.result, quiet.feedback) == (ResultCode.SUCCEEDED, "")
    bad = await runner.run(request("bad_line"))
    assert (bad.result, bad.feedback) == (ResultCode.FAILED, "bad_line exited with code 1")


async def test_executable_killed_by_a_signal(runner: Runner, scripts: Path) -> None:
    executable(scripts, "selfkill.sh", "#!/bin/sh\nkill -TERM $$\n")
    outcome = await runner.run(request("selfkill"))
    assert outcome.feedback == "selfkill was killed by signal SIGTERM"


async def test_executable_output_is_bounded(runner: Runner, scripts: Path) -> None:
    executable(
        scripts,
        "flood.sh",
        """
        #!/bin/sh
        head -c 10000000 /dev/zero | tr '\\0' 'x'
        head -c 10000000 /dev/zero | tr '\\0' 'e' >&2
        echo
        echo '{"result": 3, "feedback": "survived the flood"}'
    """,
    )
    outcome = await runner.run(request("flood"))
    assert (outcome.result, outcome.feedback) == (ResultCode.SUCCEEDED, "survived the flood")
    assert len(outcome.output_tail) <= 2048


async def test_executable_timeout_kills_grandchildren(runner: Runner, scripts: Path) -> None:
    pidfile = scripts.parent / "grandchild.pid"
    executable(
        scripts,
        "hangs.sh",
        f"""
        #!/bin/sh
        sh -c 'sleep 60 & echo $! > {pidfile}; wait'
    """,
    )
    started = time.monotonic()
    outcome = await runner.run(request("hangs", timeout_s=0.5))
    assert time.monotonic() - started < 3
    assert outcome.feedback == (
        "timed out after 0.5 s; the script and its child processes were killed"
    )
    assert await gone(int(pidfile.read_text()))


async def test_a_child_holding_the_pipes_does_not_hang_the_run(
    runner: Runner, scripts: Path
) -> None:
    pidfile = scripts.parent / "lingering.pid"
    executable(
        scripts,
        "leaves_child.sh",
        f"""
        #!/bin/sh
        sleep 30 &
        echo $! > {pidfile}
        echo '{{"result": 3, "feedback": "left a child behind"}}'
    """,
    )
    started = time.monotonic()
    outcome = await runner.run(request("leaves_child", timeout_s=20))
    assert time.monotonic() - started < 3
    assert outcome.feedback == "left a child behind"
    assert await gone(int(pidfile.read_text()))


async def test_executable_that_cannot_start(runner: Runner, scripts: Path) -> None:
    executable(scripts, "no_shebang", "echo hi\n")
    outcome = await runner.run(request("no_shebang"))
    assert outcome.result is ResultCode.FAILED
    assert outcome.feedback.startswith("could not start no_shebang: ")
    executable(scripts, "nul.sh", "#!/bin/sh\n")
    nul = await runner.run(request("nul", "a\x00b"))
    assert nul.feedback.startswith("could not start nul: ")


# The allow-list ---------------------------------------------------------------------------


async def test_unknown_script_lists_the_known_ones(runner: Runner, scripts: Path) -> None:
    python_script(scripts, "known", "def run(command, ctx):\n    return 3\n")
    executable(scripts, "also_known.sh", "#!/bin/sh\n")
    outcome = await runner.run(request("unknown"))
    assert outcome.result is ResultCode.FAILED
    assert outcome.feedback.startswith("unknown script 'unknown'")
    assert outcome.feedback.endswith("known scripts: also_known, known")


@pytest.mark.parametrize("name", ["../etc/passwd", "-rf", "/bin/sh", "known.py", "x;id"])
async def test_script_names_that_could_escape_are_refused(
    runner: Runner, scripts: Path, name: str
) -> None:
    python_script(scripts, "known", "def run(command, ctx):\n    return 3\n")
    outcome = await runner.run(request(name))
    assert outcome.result is ResultCode.FAILED
    assert outcome.feedback.startswith(f"refused script name {name!r}")
    assert outcome.feedback.endswith("known scripts: known")


async def test_concurrent_python_runs_use_separate_workers(scripts: Path) -> None:
    python_script(
        scripts,
        "slow",
        """
        import json, os, time
        def run(command, ctx):
            began = time.time()
            time.sleep(0.3)
            return 3, json.dumps([os.getpid(), began, time.time()])
    """,
    )
    the_runner = Runner(ExecutorSettings(scripts_dir=scripts, concurrency=3))
    try:
        outcomes = await asyncio.gather(*(the_runner.run(request("slow")) for _ in range(3)))
        spans = [json.loads(o.feedback) for o in outcomes]
        assert len({pid for pid, _, _ in spans}) == 3
        # All three ran at the same time: each began before any of them ended.
        assert max(began for _, began, _ in spans) < min(ended for _, _, ended in spans)
        assert the_runner.pool.started == 3
    finally:
        await the_runner.close()
