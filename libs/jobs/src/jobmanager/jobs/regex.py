"""The `regex` operator's regular expressions: RE2, whose matching time is linear in the
length of the value, so no pattern can hang the matcher on an event (Python's `re`
backtracks: `(a+)+$` against forty `a`s and a `b` would take hours).

RE2's syntax is Python's without backreferences and lookaround; `\\d`, `\\w` and `\\s` are
ASCII classes, and `$` matches only at the very end of the value. A pattern RE2 cannot
compile is refused when the job is defined.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import re2  # type: ignore[import-untyped]


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message says why."""


class _Compiled(Protocol):
    def search(self, text: str) -> object | None: ...


def _options() -> object:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, not printed to stderr
    return options


_OPTIONS = _options()


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> _Compiled:
    try:
        compiled: _Compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(f"regex does not compile (RE2 syntax): {reason}") from None
    return compiled


def search(pattern: str, text: str) -> bool:
    """Whether the pattern matches anywhere in the text (like `re.search`)."""
    return compile_pattern(pattern).search(text) is not None
