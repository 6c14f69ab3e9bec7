"""Validation errors in an operator's words: the one home of how a pydantic error (its type,
location and context) is said to people, by the admin API's 422 answers and by `jobmanager
apply`.

`describe(error, model)` gives one sentence that names the field ("timeout_s must be more
than 0 and at most 86,400 seconds"). Given the model that was validated, it states a field's
whole range, not only the bound that was crossed, and suggests the field meant by an unknown
one. Errors raised by the model's own validators are already in words and are kept as they
are.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from jobmanager.jobs.spec import NAME_PATTERN, SCRIPT_PATTERN

__all__ = ["describe", "subject"]

Loc = Sequence[str | int]

# What a pattern allows, said plainly (keyed by the pattern itself, so that every field with
# it is described alike).
PATTERNS = {
    NAME_PATTERN: (
        "may hold letters, digits, spaces and _ . : - and must start with a letter or digit"
    ),
    SCRIPT_PATTERN: (
        "must be a script's name: up to 100 letters, digits, _ and -, starting with a "
        "letter or digit (no path, no extension)"
    ),
}

KINDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "datetime_type": "a date and time such as 2026-12-07T09:00:00Z",
    "datetime_parsing": "a date and time such as 2026-12-07T09:00:00Z",
    "datetime_from_date_parsing": "a date and time such as 2026-12-07T09:00:00Z",
    "timezone_aware": "a date and time with its time zone, such as 2026-12-07T09:00:00Z",
}

# The places of a request a FastAPI error location starts with.
PLACES = ("body", "query", "path", "header", "cookie")


def subject(loc: Loc) -> str:
    """The field an error location names, as a person writes it: `trigger.conditions.0.op`
    (without the request's `body`, `query`, ...)."""
    parts = list(loc)
    if parts and parts[0] in PLACES:
        parts = parts[1:]
    return ".".join(str(part) for part in parts)


def describe(error: Mapping[str, Any], model: type[BaseModel] | None = None) -> str:
    """One pydantic (or FastAPI) error in words, naming its field. `model`: the model its
    location starts in (JobSpec, say), for the field's whole range and known names."""
    loc = list(error.get("loc") or ())
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    where = subject(loc)
    parts = loc[1:] if loc and loc[0] in PLACES else loc
    field = _field(model, parts)
    said = _said(kind, ctx, error, where, field, model, parts)
    if said is None:
        text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        last = next((str(p) for p in reversed(parts) if isinstance(p, str)), "")
        # A message of the model's own validators names its field already, as a rule.
        return text if not where or (last and text.startswith(last)) else f"{where}: {text}"
    return f"{where or ('the body' if loc[:1] == ['body'] else 'the value')} {said}"


def _said(
    kind: str,
    ctx: Mapping[str, Any],
    error: Mapping[str, Any],
    where: str,
    field: FieldInfo | None,
    model: type[BaseModel] | None,
    parts: list[str | int],
) -> str | None:
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        known = _known_names(model, parts[:-1])
        close = difflib.get_close_matches(str(parts[-1]) if parts else "", known, n=1)
        return "is not a known field" + (f"; did you mean {close[0]}?" if close else "")
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return PATTERNS.get(pattern, f"must match the pattern {pattern}")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be {_range(field, ctx)}{_unit(where)}"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must have at least {least:,} characters"
    if kind == "string_too_long":
        given = error.get("input")
        has = f" (it has {len(given):,})" if isinstance(given, str) else ""
        return f"may have at most {ctx.get('max_length', 0):,} characters{has}"
    if kind in ("too_short", "too_long"):
        word = "at least" if kind == "too_short" else "at most"
        bound = ctx.get("min_length" if kind == "too_short" else "max_length", 0)
        has = f" (it has {ctx['actual_length']:,})" if "actual_length" in ctx else ""
        return f"may have {word} {bound:,} items{has}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in KINDS:
        return f"must be {KINDS[kind]}"
    return None


BOUNDS = {"gt": "more than", "ge": "at least", "lt": "less than", "le": "at most"}


def _range(field: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    """ "more than 0 and at most 86,400": every bound of the field, else those of `ctx`."""
    bounds: dict[str, Any] = {}
    for item in _constraints(field):
        # annotated_types' Gt, Ge, Lt and Le, each with the attribute of its name.
        for key in BOUNDS:
            if type(item).__name__.lower() == key and getattr(item, key, None) is not None:
                bounds[key] = getattr(item, key)
    for key in BOUNDS:
        if key in ctx:
            bounds.setdefault(key, ctx[key])
    ordered = sorted(bounds.items(), key=lambda item: list(BOUNDS).index(item[0]))
    return " and ".join(f"{BOUNDS[key]} {_number(value)}" for key, value in ordered)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def _unit(where: str) -> str:
    return " seconds" if where.endswith("_s") else ""


def _constraints(field: FieldInfo | None) -> list[Any]:
    """A field's constraints, also those of an optional one (`Annotated[int, Field(ge=1)] |
    None` keeps them inside its annotation)."""
    if field is None:
        return []
    found = list(field.metadata)
    stack = [field.annotation]
    while stack:
        annotation = stack.pop()
        if get_origin(annotation) is Annotated:
            for item in get_args(annotation)[1:]:
                found.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        stack.extend(get_args(annotation))
    return found


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, or in a list or an optional)."""
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
        if get_origin(item) in (Union, types.UnionType, list, Annotated) or get_args(item):
            stack.extend(get_args(item))
    return None


def _model_at(model: type[BaseModel] | None, parts: Loc) -> type[BaseModel] | None:
    current = model
    for part in parts:
        if isinstance(part, int):
            continue  # an item of a list: the same model
        if current is None or part not in current.model_fields:
            return None
        current = _model_of(current.model_fields[part].annotation)
    return current


def _field(model: type[BaseModel] | None, parts: Loc) -> FieldInfo | None:
    names = [p for p in parts if isinstance(p, str)]
    if not names:
        return None
    owner = _model_at(model, parts[: max(i for i, p in enumerate(parts) if isinstance(p, str))])
    return owner.model_fields.get(names[-1]) if owner is not None else None


def _known_names(model: type[BaseModel] | None, parts: Loc) -> list[str]:
    owner = _model_at(model, parts)
    return list(owner.model_fields) if owner is not None else []
