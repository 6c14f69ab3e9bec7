"""Bounded output tails and the result line of executables."""

from __future__ import annotations

import pytest

from jobmanager.executor.output import (
    TailBuffer,
    combine,
    result_line,
    shorten,
    shorten_tail,
    tail_text,
)


def test_tail_buffer_is_bounded_however_much_is_fed() -> None:
    tail = TailBuffer(1024)
    chunk = b"y" * 65536
    for _ in range(160):  # 10 MiB
        tail.feed(chunk)
        assert len(tail._buf) <= 2 * 1024 + len(chunk)
    assert tail.total == 160 * 65536
    assert tail.data() == b"y" * 1024
    assert tail.dropped == tail.total - 1024
    text = tail.text()
    assert text.startswith(f"[… {tail.dropped} bytes omitted]\n")
    assert text.endswith("y" * 1024)


def test_tail_buffer_below_the_limit_keeps_everything() -> None:
    tail = TailBuffer(100)
    tail.feed(b"abc")
    tail.feed(b"def")
    assert tail.data() == b"abcdef"
    assert tail.dropped == 0
    assert tail.text() == "abcdef"


def test_tail_text_drops_a_split_character() -> None:
    data = "é".encode() * 10  # two bytes each; a cut at an odd offset splits one
    text = tail_text(data, 5)
    assert text == "[… 15 bytes omitted]\néé"


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b'progress\n{"result": 3, "feedback": "ok"}\n', (3, "ok")),
        (b'{"result": 2, "feedback": "bad input"}\n\n   \n', (2, "bad input")),
        (b'{"result": 3}', (3, "")),
        (b'{"result": 3, "feedback": null}', (3, "")),
        (b'{"result": 2, "feedback": {"why": 1}}', (2, "{'why': 1}")),
    ],
)
def test_result_line_decides(stdout: bytes, expected: tuple[int, str]) -> None:
    assert result_line(stdout) == expected


@pytest.mark.parametrize(
    "stdout",
    [
        b"",
        b"all good\n",
        b'{"result": 3}\nbut then more\n',  # only the last line counts
        b'{"result": 1, "feedback": "x"}',
        b'{"result": true}',
        b'{"result": "3"}',
        b'[3, "x"]',
        b'{"feedback": "no result"}',
        b'{"result": 3',
    ],
)
def test_result_line_does_not_decide(stdout: bytes) -> None:
    assert result_line(stdout) is None


def test_shorten_keeps_the_beginning_and_shorten_tail_the_end() -> None:
    assert shorten("abcdef", 4) == "abc…"
    assert shorten("abc", 4) == "abc"
    assert shorten_tail("abcdef", 4) == "…def"


def test_combine_puts_stderr_last_and_bounds_the_whole() -> None:
    assert combine("out\n", "", 100) == "out"
    assert combine("", "err\n", 100) == "[stderr]\nerr"
    assert combine("out\n", "err\n", 100) == "out\n[stderr]\nerr"
    combined = combine("o" * 500, "e" * 50, 100)
    assert len(combined) == 100
    assert combined.endswith("[stderr]\n" + "e" * 50)
