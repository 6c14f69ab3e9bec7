"""The job model: the shape of a job in the admin API and in ``apply`` files.

Validation happens here, once, so that everything downstream (the matcher's index, the renderer)
can trust a JobSpec: condition values fit their operator and stay within their caps
(`MAX_VALUE_CHARS`, `MAX_VALUE_ITEMS`, `MAX_VALUE_BYTES`), regexes compile, templates compile.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from jobmanager.jobs import regex
from jobmanager.jobs.templating import compile_template

__all__ = [
    "DEFAULT_COMMAND_TEMPLATE",
    "DEFAULT_LANE",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_CHARS",
    "MAX_VALUE_ITEMS",
    "NAME_PATTERN",
    "SCRIPT_PATTERN",
    "CancelTrigger",
    "Condition",
    "JobSpec",
    "Op",
    "PlannedCancel",
    "PlannedRun",
    "Trigger",
    "json_problem",
]

Op = Literal[
    "eq",
    "ne",
    "in",
    "not_in",
    "contains",
    "startswith",
    "endswith",
    "glob",
    "regex",
    "exists",
    "not_exists",
    "gt",
    "gte",
    "lt",
    "lte",
]

DEFAULT_COMMAND_TEMPLATE = "{{ event | tojson }}"
DEFAULT_LANE = "default"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]*$"
SCRIPT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"

_STRING_OPS = frozenset({"startswith", "endswith", "glob", "regex"})
_ORDER_OPS = frozenset({"gt", "gte", "lt", "lte"})


# Caps on a condition's value. A condition compares one field of an event (an id, a name, an
# origin: tens of characters) with a literal or a short list of them; the matcher holds every
# value in memory and runs every condition of a candidate job on every event, and RE2 compiles
# (and caches) every pattern. 1,000 characters is far beyond any real field or pattern, and
# 1,000 items beyond any hand-kept list of channels; a bigger list belongs in a lane or a
# script, not in a trigger. The whole value stays under 64 KiB of JSON, and values nest at
# most as deep as events may (64 levels).
MAX_VALUE_CHARS = 1_000
MAX_VALUE_ITEMS = 1_000
MAX_VALUE_BYTES = 64 * 1024
MAX_DEPTH = 64


def json_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` is not plain JSON that Postgres stores and gives back unchanged (None if
    it is): only JSON types, finite numbers, string keys, no NUL character and no unpaired
    surrogate in any string, at most ``max_depth`` levels of nesting. Walks iteratively, so
    no nesting can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > max_depth:
            return f"nested deeper than {max_depth} levels"
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return "numbers must be finite"
        elif isinstance(item, str):
            if (problem := _text_problem(item)) is not None:
                return problem
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        elif isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return "object keys must be strings"
            stack.extend((k, level + 1) for k in item)
            stack.extend((v, level + 1) for v in item.values())
        else:
            return f"{type(item).__name__} is not a JSON value"
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a string contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a string is not valid Unicode (an unpaired surrogate)"
    return None


def _size_problem(value: Any) -> str | None:
    """Why ``value`` (plain JSON) is over the caps on a condition's value (None if it is not)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and len(item) > MAX_VALUE_CHARS:
            return f"a string of {len(item)} characters (at most {MAX_VALUE_CHARS})"
        if isinstance(item, list | dict) and len(item) > MAX_VALUE_ITEMS:
            return f"{len(item)} items (at most {MAX_VALUE_ITEMS})"
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_VALUE_BYTES:
        return f"{size} bytes of JSON (at most {MAX_VALUE_BYTES})"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Condition(BaseModel):
    """One test on the event: the value at ``path`` compared with ``value`` by ``op``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Annotated[str, Field(min_length=1, max_length=500)]
    op: Op
    # Checked as a field (against `op` when `op` itself is valid), not after the model, so
    # that a condition with a wrong path and a wrong value reports both at once: pydantic
    # runs no model validator once a field has failed.
    value: Any = Field(default=None, validate_default=True)

    @field_validator("path")
    @classmethod
    def _path_segments(cls, path: str) -> str:
        if any(not segment for segment in path.split(".")):
            raise ValueError(f"path {path!r} has an empty segment (e.g. data.channel.origin)")
        return path

    @field_validator("value")
    @classmethod
    def _value_fits_op(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        problem = json_problem(value) or _size_problem(value)
        if problem:
            raise ValueError(f"value of a {op} condition: {problem}" if op else problem)
        if op in ("exists", "not_exists"):
            if value is not None:
                raise ValueError(f"{op} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list):
                raise ValueError(f"{op} needs a list value")
        elif op in _STRING_OPS:
            if not isinstance(value, str):
                raise ValueError(f"{op} needs a string value")
            if op == "regex":
                regex.compile_pattern(value)  # RegexError (a ValueError) says why not
        elif op in _ORDER_OPS and not (_is_number(value) or isinstance(value, str)):
            raise ValueError(f"{op} needs a number or a string value")
        return value


class Trigger(BaseModel):
    """Which events start a job: an event type (exact or glob) and conditions that must all hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: Annotated[str, Field(min_length=1, max_length=200)]
    conditions: Annotated[list[Condition], Field(max_length=50)] = []


class CancelTrigger(Trigger):
    """Events that end a job's waiting runs (`JobSpec.cancel_on`): in the event's lane (the
    job's lane template rendered for it, `scope: lane`, the only scope), its queued runs are
    removed and, with `running`, the one dispatched or running is cancelled."""

    scope: Literal["lane"] = "lane"
    running: bool = False


class JobSpec(BaseModel):
    """A job as an operator writes it: trigger, script, command template, lane and limits."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
    description: Annotated[str, Field(max_length=2000)] = ""
    enabled: bool = True
    trigger: Trigger
    script: Annotated[str, Field(pattern=SCRIPT_PATTERN)]
    command_template: Annotated[str, Field(max_length=20000)] = DEFAULT_COMMAND_TEMPLATE
    lane: Annotated[str, Field(min_length=1, max_length=2000)] | None = DEFAULT_LANE
    timeout_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 600.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 1
    retry_backoff_s: Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] = 0.0
    # Cancel: how long a cancelled script has after SIGTERM before it is killed (SIGKILL).
    cancel_grace_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 10.0
    # Flow control. `paused`: True pauses the job, False resumes it, and None (left out)
    # leaves it as it is, so that a file applied again never resumes a job an operator or the
    # circuit breaker paused. `pause_after_failures`: the breaker, off when None.
    # `max_concurrency`: at most this many of its runs dispatched or running at once.
    paused: bool | None = None
    pause_after_failures: Annotated[int, Field(ge=1, le=10000)] | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=10000)] | None = None
    # Debounce: while a run of the job waits in a lane, a new event for that lane replaces
    # it; the survivor starts `debounce_s` after the newest event, and no later than
    # `debounce_max_s` after the burst's first (when set), so a stream that never pauses
    # still runs.
    debounce_s: Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] = 0.0
    debounce_max_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = None
    # Cancel on a later event: each entry is a trigger whose events end the job's runs still
    # waiting in the event's lane (and, with `running`, the one on an executor).
    cancel_on: Annotated[list[CancelTrigger], Field(max_length=20)] = []

    # The rules between fields are field validators of the later field, run when the earlier
    # one is valid (it is then in `info.data`): pydantic runs no model validator once a field
    # has failed, and a submission should hear of every problem in one answer.
    @field_validator("cancel_on")
    @classmethod
    def _cancel_needs_a_lane(
        cls, cancel_on: list[CancelTrigger], info: ValidationInfo
    ) -> list[CancelTrigger]:
        # Without a lane every run is dispatched at once and there is no "this channel's
        # runs" to end: refuse it rather than cancel every waiting run of the job.
        if cancel_on and "lane" in info.data and info.data["lane"] is None:
            raise ValueError("cancel_on needs a lane: it ends the runs waiting in the event's lane")
        return cancel_on

    @field_validator("debounce_max_s")
    @classmethod
    def _debounce_window(cls, debounce_max_s: float | None, info: ValidationInfo) -> float | None:
        debounce_s = info.data.get("debounce_s")
        if debounce_max_s is not None and debounce_s is not None and debounce_max_s < debounce_s:
            raise ValueError(
                f"debounce_max_s ({debounce_max_s:g}) must be at least debounce_s ({debounce_s:g})"
            )
        return debounce_max_s

    @field_validator("command_template")
    @classmethod
    def _command_compiles(cls, source: str) -> str:
        try:
            compile_template(source)
        except ValueError as exc:
            raise ValueError(f"command_template: {exc}") from None
        return source

    @field_validator("lane")
    @classmethod
    def _lane_compiles(cls, source: str | None) -> str | None:
        if source is None:
            return None
        if not source.strip():
            raise ValueError("lane must not be blank (use null for no sequencing)")
        try:
            compile_template(source)
        except ValueError as exc:
            raise ValueError(f"lane: {exc}") from None
        return source


@dataclass(frozen=True)
class PlannedRun:
    """A run an event causes, as the matcher plans it from a job: its script, rendered command
    and lane, and the job's limits. `error` set: it could not be prepared (a template failed)
    and the ledger records it as Failed with that Feedback instead of losing it."""

    job_id: int | None
    job_name: str
    script: str
    command: str
    lane: str | None
    timeout_s: float = 600.0
    max_attempts: int = 1
    retry_backoff_s: float = 0.0
    debounce_s: float = 0.0
    debounce_max_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class PlannedCancel:
    """What an event matching a job's `cancel_on` entry ends: the job's queued runs in `lane`
    and, with `running`, its run dispatched or running there."""

    job_id: int
    lane: str
    running: bool = False
