"""The delay stage's routing arithmetic (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobmanager.core import delays


def test_short_delays_are_held_by_the_gate() -> None:
    assert delays.routing_key(0) is None
    assert delays.routing_key(delays.LEAD_MS + 15) is None
    assert delays.routing_key(-5) is None


@given(st.integers(min_value=delays.LEAD_MS + 16, max_value=delays.MAX_DELAY_MS))
def test_a_request_leaves_the_stage_early_by_less_than_the_lead_plus_one_level(ms: int) -> None:
    key = delays.routing_key(ms)
    assert key is not None
    staged = delays.staged_delay_ms(key)
    early = ms - staged
    assert delays.LEAD_MS <= early < delays.LEAD_MS + (1 << delays.MIN_LEVEL)


def test_delays_beyond_the_stage_are_capped() -> None:
    key = delays.routing_key(delays.MAX_DELAY_MS * 3)
    assert key is not None and delays.staged_delay_ms(key) == delays.MAX_DELAY_MS


def test_level_bindings_select_their_own_word() -> None:
    key = delays.routing_key(1000)
    assert key is not None
    words = key.split(".")
    for level in delays.LEVELS:
        set_pattern, clear_pattern = delays.level_binding(level)
        position = delays.MAX_LEVEL - level
        assert set_pattern.split(".")[position] == "1"
        assert clear_pattern.split(".")[position] == "0"
        assert all(w == "*" for w in set_pattern.split(".")[:position])
        assert words[position] == ("1" if (1000 - delays.LEAD_MS) >> level & 1 else "0")
