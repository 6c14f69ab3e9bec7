"""The configuration reference (`docs/CONFIGURATION.md`), generated from the settings classes.

Every environment variable of every service, with its type, default, description and the
services that read it, taken from the pydantic-settings classes themselves (never by building
one: nothing here reads the environment). `jobmanager config-reference --output
docs/CONFIGURATION.md` refreshes the committed copy; a test fails when it is stale, and when
a setting has no description.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from jobmanager.admin.config import AdminSettings
from jobmanager.core.config import DatabaseSettings, RenderSettings, ServiceSettings
from jobmanager.executor.config import ExecutorSettings
from jobmanager.matcher.config import MatcherSettings

# Who builds which settings object. The CLI's commands that touch the database (migrate,
# check, apply, apikey, demo) use DatabaseSettings; publish and simulate the shared ones.
READERS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("matcher", MatcherSettings),
    ("executor", ExecutorSettings),
    ("admin", AdminSettings),
    ("CLI", DatabaseSettings),
)

# Sections, in order: the class that declares a setting decides where it is listed.
SECTIONS: tuple[tuple[type[BaseSettings], str], ...] = (
    (ServiceSettings, "Every service"),
    (DatabaseSettings, "Services with a database (matcher, admin, CLI)"),
    (RenderSettings, "Template rendering (matcher, admin)"),
    (MatcherSettings, "Matcher"),
    (ExecutorSettings, "Executor"),
    (AdminSettings, "Admin"),
)

# Descriptions of settings whose class does not carry one (the service classes use comments).
# A `Field(description=...)` in the class wins over an entry here.
DESCRIPTIONS: dict[str, str] = {
    "event_max_bytes": "Largest event body accepted; a larger one is parked as `too large`.",
    "event_max_depth": "Deepest JSON nesting accepted in an event; deeper ones are parked.",
    "prefetch": "Unacknowledged messages per consumer of the events, results and lost queues.",
    "batch_max": "Most messages the events, gate and results consumers apply in one "
    "transaction (what arrived while the previous batch was written); 1 turns batching off.",
    "direct_dispatch": "Dispatch a run that is due at once in the transaction that made it its "
    "lane's head (an event's enqueue, a result) instead of through the gate: one queue hop and "
    "one transaction fewer. A work request lost to a crash right after that commit is re-sent "
    "by the reaper (after dispatch_grace_s, once the work queue has no ready message). false: "
    "every run goes through the gate, whose requests a redelivered input re-sends at once.",
    "gate_prefetch": "Unacknowledged due requests the gate may hold (early ones wait in it, "
    "so it needs room for many lanes).",
    "gate_hold_max_s": "Longest the gate waits itself for a request that came out of the delay "
    "stage early; an earlier one goes round the stage again.",
    "catalogue_refresh_s": "How often the matcher reloads jobs and settings even without a "
    "change broadcast.",
    "lane_check_s": "How often the matcher repairs lanes (heads lost in a crash, lost "
    "executors, lost requests).",
    "lane_grace_s": "How long a lane's head may be overdue before the lane check sends its "
    "request again.",
    "running_grace_s": "How long after its timeout a running run's executor is presumed lost.",
    "dispatch_grace_s": "How long a dispatched run may wait to start, with the work queue idle, "
    "before its request is presumed lost and sent again.",
    "db_pool_size": "Database connections the service keeps open.",
    "scripts_dir": "The scripts directory: the allow-list of what runs.",
    "concurrency": "Scripts one executor runs at once (and its prefetch on the work queue).",
    "executor_id": "This executor's name in results and reports.",
    "output_tail_bytes": "Output kept with a result (what operators see).",
    "result_scan_bytes": "Stdout kept to find an executable's result line.",
    "feedback_max_chars": "Longest Feedback kept; longer ones are shortened.",
    "exit_drain_s": "After an executable exits, how long to keep reading pipes its leftover "
    "children hold.",
    "report_interval_s": "How often the executor reports its scripts and load (`executor.report`).",
    "report_started_after_s": "A script still running this long after its start is reported "
    "as started (`run.started`, state running); a shorter one is reported once, by its result, "
    "which carries its start time. 0 reports every start at once.",
    "script_search_path": "The `PATH` scripts get (their environment is minimal).",
    "script_env": "Names of variables handed on to scripts, comma-separated; nothing else of "
    "the executor's environment reaches them, and never its own `JOBMANAGER_*` settings.",
    "admin_host": "Address the admin API listens on (`0.0.0.0` in a container).",
    "admin_port": "Port of the admin API, console and `/metrics`.",
    "admin_token": "When set, accepted as an admin API key (bootstrap); at least 16 "
    "characters; never logged.",
    "cleanup_interval_s": "How often Auto Cleanup runs (one replica at a time).",
    "metrics_refresh_s": "How often the table gauges of `/metrics` are recounted.",
    "executor_report_window_s": "Executors that reported within this window make up the "
    "catalogue of known scripts that jobs are checked against.",
}

# Defaults computed when a service starts, described in words (their value depends on the
# machine). A factory's docstring is used when it has one.
COMPUTED_DEFAULTS: dict[str, str] = {
    "executor_id": "`<hostname>-<pid>`",
}

HEADER = """\
# Configuration reference

<!-- Generated from the settings classes by
     `jobmanager config-reference --output docs/CONFIGURATION.md`; do not edit by hand. -->

Job Manager is configured only by environment variables (a `.env` file in the working
directory is read too). Each service builds one settings object when it starts; a value that
does not validate stops it with a message naming the variable. Variables a service does not
know are ignored, so one environment may serve all of them.

| reader | settings class |
|---|---|
{readers}

The queue interval, the Auto Cleanup settings and the event retention are not environment
variables: they live in the database (`jobmanager apply`, the admin API).
"""


def env_name(cls: type[BaseSettings], name: str) -> str:
    """The environment variable of a setting."""
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def settings_variables() -> dict[str, set[str]]:
    """Every environment variable, with the readers (services, CLI) that know it."""
    variables: dict[str, set[str]] = {}
    for reader, cls in READERS:
        for name in cls.model_fields:
            variables.setdefault(env_name(cls, name), set()).add(reader)
    return variables


def _declaring_class(cls: type[BaseSettings], name: str) -> type[BaseSettings]:
    """The class in `cls`'s hierarchy that declares the setting."""
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return klass
    return cls


def _fields(section: type[BaseSettings]) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in section.model_fields.items():
        if _declaring_class(section, name) is section:
            yield name, field


def description(name: str, field: FieldInfo) -> str | None:
    return field.description or DESCRIPTIONS.get(name)


def missing_descriptions() -> list[str]:
    """Settings that have no description anywhere (the reference would say so)."""
    return [
        f"{section.__module__}.{section.__name__}.{name}"
        for section, _ in SECTIONS
        for name, field in _fields(section)
        if description(name, field) is None
    ]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(a) for a in parts)
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation is SecretStr:
        return "secret string"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(field: FieldInfo) -> list[str]:
    words = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            words.append("not empty" if item.min_length == 1 else f"≥ {item.min_length} chars")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"≤ {item.max_length} chars")
    return words


def type_text(field: FieldInfo) -> str:
    text = _type_name(field.annotation)
    constraints = _constraints(field)
    return f"{text} ({', '.join(constraints)})" if constraints else text


def default_text(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        doc = inspect.getdoc(field.default_factory)
        return COMPUTED_DEFAULTS.get(name) or (doc.split("\n")[0] if doc else "computed at start")
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The reference as Markdown."""
    readers = "\n".join(f"| {r} | `{c.__module__}.{c.__name__}` |" for r, c in READERS)
    lines = [HEADER.format(readers=readers)]
    variables = settings_variables()
    for section, title in SECTIONS:
        lines += [
            f"## {title}",
            "",
            "| variable | type | default | read by | description |",
            "|---|---|---|---|---|",
        ]
        for name, field in _fields(section):
            var = env_name(section, name)
            used = ", ".join(r for r, _ in READERS if r in variables[var])
            text = description(name, field) or "(no description)"
            cells = (f"`{var}`", type_text(field), default_text(name, field), used, text)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)
