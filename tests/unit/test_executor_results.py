"""Normalising what a Python script's run() returns, and the worker's bounded capture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from jobmanager.core.messages import ResultCode
from jobmanager.executor.worker import Context, OutputTail, normalise_result


@dataclass
class Reply:
    result: Any
    feedback: Any = ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((3, "done"), (3, "done")),
        ([2, "broken"], (2, "broken")),
        ((ResultCode.SUCCEEDED, "ok"), (3, "ok")),
        (ResultCode.FAILED, (2, "")),
        (3, (3, "")),
        ({"result": 2, "feedback": "why"}, (2, "why")),
        ({"result": 3}, (3, "")),
        (Reply(3, "attr"), (3, "attr")),
        (Reply(2, None), (2, "")),
        ((3, 42), (3, "42")),
    ],
)
def test_accepted_return_values(value: object, expected: tuple[int, str]) -> None:
    assert normalise_result(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "bad return value from run(): None"),
        ("3", "bad return value from run(): '3'"),
        ((3,), "bad return value"),
        ((3, "a", "b"), "bad return value"),
        ({"feedback": "no result"}, "bad return value"),
        (5, "bad result code from run(): 5"),
        ((0, "zero"), "bad result code from run(): 0"),
        ((True, "bool"), "bad result code from run(): True"),
        (Reply("3"), "bad result code from run(): '3'"),
        ((3.0, "float"), "bad result code"),
    ],
)
def test_bad_return_values_fail_with_an_explanation(value: object, fragment: str) -> None:
    code, feedback = normalise_result(value)
    assert code == ResultCode.FAILED
    assert fragment in feedback
    assert "2 (Failed) or 3 (Succeeded)" in feedback


def test_a_huge_bad_value_is_described_briefly() -> None:
    _, feedback = normalise_result("x" * 100_000)
    assert len(feedback) < 400


def test_output_tail_keeps_only_the_end() -> None:
    tail = OutputTail(100)
    for i in range(10_000):
        tail.write(f"line {i}\n")
    text = tail.getvalue()
    assert text.endswith("line 9999\n")
    assert text.startswith("[… ")
    assert len(text) < 150


def test_output_tail_below_the_limit_is_verbatim() -> None:
    tail = OutputTail(100)
    tail.write("hello\n")
    assert tail.getvalue() == "hello\n"


def test_context_log_writes_lines_to_the_tail() -> None:
    tail = OutputTail(1000)
    ctx = Context({"run_id": 7, "attempt": 2, "job": "j", "lane": None, "script": "s"}, tail)
    ctx.log("first")
    ctx.log("second")
    assert (ctx.run_id, ctx.attempt, ctx.job, ctx.lane, ctx.event) == (7, 2, "j", None, None)
    assert tail.getvalue() == "first\nsecond\n"
