"""The throttled logger: a flood of the same complaint is one line per period, with a count."""

from __future__ import annotations

import logging

import pytest

from jobmanager.core.logs import Throttled


def test_one_line_per_key_and_period_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = Throttled(logging.getLogger("t"), every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        logged = [throttled.warning("a", "run %d ignored", n) for n in range(1000)]
        assert throttled.warning("b", "other reason")  # another key has its own period
        now[0] = 10.5
        assert throttled.warning("a", "run %d ignored", 1000)
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "run 0 ignored",
        "other reason",
        "run 1000 ignored (999 more like it in the last 10 s)",
    ]
