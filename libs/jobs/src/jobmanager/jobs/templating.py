"""Command and lane templates: Jinja2 in an immutable sandbox, no HTML escaping.

A template sees the event's top-level fields as variables (``event_id``, ``event_type``,
``source``, ``occurred_at``, ``data`` and any other top-level key) and the whole event as
``event``. Undefined variables are errors (``StrictUndefined``), never an empty string, so a
command is never built from a half-filled template. ``tojson`` emits plain JSON (``<`` stays
``<``, non-ASCII stays as is, key order is kept) because commands are not HTML.

The sandbox refuses access to private attributes and mutating methods, limits ``range`` to
100,000 items, and bounds ``*`` and ``**`` so that compiling a template cannot allocate
gigabytes (Jinja2 folds constant expressions at compile time, in whichever process compiles).
Rendering is bounded as a whole, in time and memory, only by rendering in a worker process
(`jobmanager.jobs.renderer`): these functions do no such thing themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import StrictUndefined, Template
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "MAX_LANE_LEN",
    "Template",
    "TemplateError",
    "compile_template",
    "render_command",
    "render_lane",
    "template_context",
]

MAX_LANE_LEN = 200
DEFAULT_MAX_COMMAND_LEN = 65536
# Upper bounds for ``*`` (length of a repeated string or list) and ``**`` (bits of the result).
_MAX_REPEAT_LEN = 1_000_000
_MAX_POWER_BITS = 100_000


class TemplateError(ValueError):
    """A template that does not compile or does not render; the message says why."""


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > _MAX_REPEAT_LEN
                ):
                    raise SecurityError(f"repetition longer than {_MAX_REPEAT_LEN} items")
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and right * left.bit_length() > _MAX_POWER_BITS
        ):
            raise SecurityError(f"power larger than {_MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


def _plain_tojson(value: Any, indent: int | None = None) -> str:
    # Jinja2's own tojson always HTML-escapes <, >, & and ' whatever the dumps policy says.
    return json.dumps(value, ensure_ascii=False, sort_keys=False, indent=indent)


def _make_environment() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.policies["json.dumps_function"] = json.dumps
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    env.filters["tojson"] = _plain_tojson
    env.globals.pop("lipsum", None)  # generates arbitrary amounts of text; no use in a command
    return env


_ENV = _make_environment()


@lru_cache(maxsize=16384)
def compile_template(source: str) -> Template:
    """Compile a template in the sandbox (cached by source); TemplateError on a syntax error."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.message} (line {exc.lineno})") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(str(exc)) from None


def template_context(document: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a template sees: the event's top-level fields, plus ``event`` (all of it)."""
    context = {key: value for key, value in document.items() if isinstance(key, str)}
    context["event"] = document
    return context


def _render(
    what: str, template: Template | str, document: Mapping[str, Any], limit: int, too_long: str
) -> str:
    if isinstance(template, str):
        template = compile_template(template)
    parts: list[str] = []
    size = 0
    try:
        # Stream the output so a runaway template stops as soon as it passes the limit.
        for chunk in template.generate(template_context(document)):
            size += len(chunk)
            if size > limit:
                raise TemplateError(f"{what}: {too_long}")
            parts.append(chunk)
    except (TemplateError, MemoryError):
        # A MemoryError is the render worker's memory limit (see `render_worker`), not the
        # template's own error: the worker reports it as the limit.
        raise
    except jinja2.TemplateError as exc:  # includes UndefinedError and SecurityError
        raise TemplateError(f"{what}: {exc.message or type(exc).__name__}") from None
    except Exception as exc:
        # Templates are user code: a failing filter or operation is the template's error.
        raise TemplateError(f"{what}: {type(exc).__name__}: {exc}") from None
    return "".join(parts)


def render_command(
    template: Template | str,
    document: Mapping[str, Any],
    *,
    max_len: int = DEFAULT_MAX_COMMAND_LEN,
) -> str:
    """Render a job's Command for an event; TemplateError if it fails or exceeds ``max_len``."""
    too_long = f"output longer than {max_len} characters"
    return _render("command template", template, document, max_len, too_long)


def render_lane(template: Template | str | None, document: Mapping[str, Any]) -> str | None:
    """Render a job's lane for an event (stripped); None means the run is not sequenced.

    TemplateError if rendering fails or the lane is empty or longer than MAX_LANE_LEN.
    """
    if template is None:
        return None
    # Rendering beyond the limit (plus room for surrounding whitespace) is wasted work.
    too_long = f"rendered a lane longer than {MAX_LANE_LEN} characters"
    lane = _render("lane template", template, document, MAX_LANE_LEN * 4, too_long).strip()
    if not lane:
        raise TemplateError("lane template: rendered an empty lane")
    if len(lane) > MAX_LANE_LEN:
        raise TemplateError(f"lane template: {too_long}")
    return lane
