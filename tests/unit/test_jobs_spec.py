"""The job model: defaults, limits and the validation messages an operator sees."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobmanager.jobs.spec import (
    DEFAULT_COMMAND_TEMPLATE,
    DEFAULT_LANE,
    Condition,
    JobSpec,
    Trigger,
)

# The example job of SPEC §8, as an ``apply`` file gives it.
IPX_UPDATE: dict[str, Any] = {
    "name": "ipx-update",
    "trigger": {
        "event_type": "channel.updated",
        "conditions": [
            {"path": "data.channel.origin", "op": "eq", "value": "avcm"},
            {"path": "data.changes.pod_service", "op": "exists"},
        ],
    },
    "script": "ipx_update",
    "command_template": "{{ data.channel | tojson }}",
    "lane": "{{ data.channel.channel_id }}",
    "timeout_s": 120,
    "max_attempts": 3,
    "retry_backoff_s": 10,
}


def job(**overrides: Any) -> dict[str, Any]:
    return {**IPX_UPDATE, **overrides}


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(str(e["msg"]) for e in exc.value.errors())


def test_spec_example_job_validates() -> None:
    spec = JobSpec.model_validate(IPX_UPDATE)
    assert spec.trigger.conditions[1] == Condition(path="data.changes.pod_service", op="exists")
    assert spec.enabled is True
    assert spec.timeout_s == 120
    assert spec.max_attempts == 3


def test_defaults() -> None:
    spec = JobSpec.model_validate(
        {"name": "minimal", "trigger": {"event_type": "*"}, "script": "echo"}
    )
    assert spec.command_template == DEFAULT_COMMAND_TEMPLATE == "{{ event | tojson }}"
    assert spec.lane == DEFAULT_LANE == "default"
    assert spec.description == ""
    assert spec.trigger.conditions == []
    assert (spec.timeout_s, spec.max_attempts, spec.retry_backoff_s) == (600, 1, 0)
    assert spec.cancel_grace_s == 10


def test_round_trip_through_json() -> None:
    spec = JobSpec.model_validate(IPX_UPDATE)
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_lane_null_means_no_sequencing() -> None:
    assert JobSpec.model_validate(job(lane=None)).lane is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "at least 1 character"),
        ("name", "-leading-dash", "match pattern"),
        ("name", "a/b", "match pattern"),
        ("name", "x" * 201, "at most 200"),
        ("script", "../etc/passwd", "match pattern"),
        ("script", "run.py", "match pattern"),
        ("script", "s" * 101, "match pattern"),
        ("description", "d" * 2001, "at most 2000"),
        ("timeout_s", 0, "greater than 0"),
        ("timeout_s", 86401, "less than or equal to 86400"),
        ("max_attempts", 0, "greater than or equal to 1"),
        ("max_attempts", 101, "less than or equal to 100"),
        ("retry_backoff_s", -1, "greater than or equal to 0"),
        ("cancel_grace_s", -1, "greater than or equal to 0"),
        ("cancel_grace_s", 3601, "less than or equal to 3600"),
        ("command_template", "x" * 20001, "at most 20000"),
        ("lane", "  ", "must not be blank"),
        ("surprise", 1, "Extra inputs are not permitted"),
    ],
)
def test_field_limits(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(job(**{field: value}))
    assert message in error_text(exc)


def test_names_with_spaces_dots_and_colons_are_fine() -> None:
    name = "IPX update: pod.v2_a-b"
    assert JobSpec.model_validate(job(name=name)).name == name


def test_command_template_syntax_error_is_reported() -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(job(command_template="{{ data.channel | tojson "))
    text = error_text(exc)
    assert "command_template:" in text
    assert "line 1" in text


def test_lane_syntax_error_is_reported() -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(job(lane="{% if %}"))
    assert "lane:" in error_text(exc)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"path": "data.x", "op": "exists", "value": 1}, "exists takes no value"),
        ({"path": "data.x", "op": "not_exists", "value": "a"}, "not_exists takes no value"),
        ({"path": "data.x", "op": "in", "value": "a"}, "in needs a list"),
        ({"path": "data.x", "op": "not_in", "value": None}, "not_in needs a list"),
        (
            {"path": "data.x", "op": "regex", "value": "("},
            "regex does not compile (RE2 syntax): missing ): (",
        ),
        ({"path": "data.x", "op": "regex", "value": 1}, "regex needs a string"),
        # RE2 has no backreferences or lookaround (they are what makes matching exponential).
        ({"path": "data.x", "op": "regex", "value": r"(a)\1"}, "invalid escape sequence: \\1"),
        ({"path": "data.x", "op": "regex", "value": "(?<=a)b"}, "invalid perl operator: (?<="),
        ({"path": "data.x", "op": "glob", "value": ["a"]}, "glob needs a string"),
        ({"path": "data.x", "op": "startswith", "value": None}, "startswith needs a string"),
        ({"path": "data.x", "op": "endswith", "value": 3}, "endswith needs a string"),
        ({"path": "data.x", "op": "gt", "value": True}, "gt needs a number or a string"),
        ({"path": "data.x", "op": "lte", "value": [1]}, "lte needs a number or a string"),
        ({"path": "data.x", "op": "eq", "value": float("nan")}, "numbers must be finite"),
        ({"path": "data..x", "op": "eq", "value": 1}, "empty segment"),
        ({"path": ".x", "op": "eq", "value": 1}, "empty segment"),
        ({"path": "", "op": "eq", "value": 1}, "at least 1 character"),
        ({"path": "data.x", "op": "equals", "value": 1}, "Input should be 'eq'"),
        ({"path": "data.x", "op": "eq", "value": 1, "extra": 1}, "Extra inputs"),
    ],
)
def test_condition_validation(condition: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Condition.model_validate(condition)
    assert message in error_text(exc)


@pytest.mark.parametrize(
    "condition",
    [
        {"path": "data.x", "op": "exists"},
        {"path": "data.x", "op": "eq", "value": None},
        {"path": "data.x", "op": "eq", "value": {"a": [1, 2.5, True]}},
        {"path": "data.items.0", "op": "in", "value": []},
        {"path": "data.x", "op": "contains", "value": 3},
        {"path": "data.x", "op": "gte", "value": 2.5},
        {"path": "occurred_at", "op": "lt", "value": "2026-01-01T00:00:00Z"},
        {"path": "data.x", "op": "regex", "value": "^pod-[0-9]+$"},
    ],
)
def test_valid_conditions(condition: dict[str, Any]) -> None:
    assert Condition.model_validate(condition).path == condition["path"]


def test_non_json_condition_value_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Condition(path="data.x", op="eq", value={1, 2})
    assert "set is not a JSON value" in error_text(exc)


def test_condition_is_frozen() -> None:
    condition = Condition(path="data.x", op="exists")
    with pytest.raises(ValidationError):
        condition.path = "data.y"  # type: ignore[misc]


def test_trigger_limits() -> None:
    with pytest.raises(ValidationError):
        Trigger(event_type="")
    with pytest.raises(ValidationError):
        Trigger(event_type="x" * 201)
    many = [Condition(path="data.x", op="exists")] * 51
    with pytest.raises(ValidationError) as exc:
        Trigger(event_type="*", conditions=many)
    assert "at most 50" in error_text(exc)
