"""Delay arithmetic for the delay stage (pure; no I/O).

RabbitMQ has no delayed delivery of its own here, and a per-message TTL in one queue blocks
behind its head. So the delay stage is a ladder of levels: level n is a queue whose
queue-level TTL is 2**n milliseconds and which dead-letters into the level below. A request's
remaining delay is written in its routing key, one word per level, most significant first;
each level's exchange sends the message into its queue when the level's bit is 1 and on to
the next level when it is 0. A message therefore waits only in the levels whose bit is set,
and every queue holds messages of one TTL, so nothing waits behind a longer delay (the design
of NServiceBus's RabbitMQ transport and Kombu's native delayed delivery).

Levels below `MIN_LEVEL` do not exist: the gate holds the last few milliseconds locally, and
the stage aims `LEAD_MS` early so that the hops through the levels make a request arrive
before it is due rather than after.
"""

from __future__ import annotations

MIN_LEVEL = 4  # 16 ms
MAX_LEVEL = 31  # 2**31 ms, about 24.9 days; all levels together delay about 49.7 days
LEAD_MS = 25
LEVELS = tuple(range(MAX_LEVEL, MIN_LEVEL - 1, -1))
MAX_DELAY_MS = (1 << (MAX_LEVEL + 1)) - (1 << MIN_LEVEL)


def routing_key(delay_ms: float) -> str | None:
    """The delay stage routing key for a delay, or None if the gate should hold it itself.

    A request delayed longer than the stage can hold arrives early; the gate sends it round
    again.
    """
    budget = int(delay_ms) - LEAD_MS
    if budget < (1 << MIN_LEVEL):
        return None
    budget = min(budget, MAX_DELAY_MS)
    return ".".join("1" if budget >> level & 1 else "0" for level in LEVELS)


def staged_delay_ms(key: str) -> int:
    """How long a request with this routing key waits in the stage (the inverse, for tests)."""
    words = key.split(".")
    if len(words) != len(LEVELS) or any(w not in ("0", "1") for w in words):
        raise ValueError(f"not a delay routing key: {key!r}")
    return sum(1 << level for level, word in zip(LEVELS, words, strict=True) if word == "1")


def level_binding(level: int) -> tuple[str, str]:
    """Binding keys of one level's exchange: (bit set → the level's queue, bit clear → next)."""
    before = "*." * (MAX_LEVEL - level)
    return f"{before}1.#", f"{before}0.#"
