"""Bounded handling of what scripts print (pure; no I/O).

A script may print gigabytes; the executor keeps only tails of bounded size, and reads a
result only from the last line of the tail.
"""

from __future__ import annotations

import json


class TailBuffer:
    """Keeps the last `limit` bytes fed into it, and counts what it dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.total = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk
        # Trimming only when twice over the limit keeps the cost per byte constant.
        if len(self._buf) > 2 * self.limit:
            del self._buf[: len(self._buf) - self.limit]

    def data(self) -> bytes:
        return bytes(self._buf[-self.limit :])

    @property
    def dropped(self) -> int:
        return self.total - min(len(self._buf), self.limit)

    def text(self, limit: int | None = None) -> str:
        """The tail as text, at most `limit` bytes of it, marked when something was cut."""
        return tail_text(self.data(), limit or self.limit, dropped=self.dropped)


def tail_text(data: bytes, limit: int, *, dropped: int = 0) -> str:
    """The last `limit` bytes of `data` decoded as UTF-8, marked when something was cut."""
    omitted = dropped + max(0, len(data) - limit)
    kept = data[-limit:] if limit > 0 else b""
    # A cut may split a multi-byte character; its remains decode to U+FFFD and are dropped.
    text = kept.decode("utf-8", "replace")
    if omitted:
        text = text.lstrip("\ufffd")
        return f"[… {omitted} bytes omitted]\n{text}"
    return text


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, keeping its beginning."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def shorten_tail(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, keeping its end (where errors usually are)."""
    if len(text) <= limit:
        return text
    return "…" + text[len(text) - max(0, limit - 1) :]


def result_line(stdout: bytes) -> tuple[int, str] | None:
    """The result an executable reported on its last non-empty stdout line, if any.

    The line decides only if it is a JSON object whose ``result`` is 2 or 3; its optional
    ``feedback`` becomes the run's Feedback.
    """
    for raw in reversed(stdout.splitlines()):
        line = raw.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        code = value.get("result")
        if isinstance(code, bool) or code not in (2, 3):
            return None
        feedback = value.get("feedback", "")
        return int(code), "" if feedback is None else str(feedback)
    return None


def combine(stdout: str, stderr: str, limit: int) -> str:
    """One output tail from both streams, stderr last so that errors survive the cut."""
    parts = [stdout.rstrip("\n")] if stdout.strip() else []
    if stderr.strip():
        parts.append("[stderr]\n" + stderr.rstrip("\n"))
    return shorten_tail("\n".join(parts), limit)
