"""Validation errors in an operator's words (`jobmanager.jobs.wording`), and every problem of
a job reported at once."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobmanager.jobs.spec import JobSpec
from jobmanager.jobs.wording import describe, subject

JOB: dict[str, Any] = {
    "name": "ipx-update",
    "trigger": {"event_type": "channel.updated"},
    "script": "ipx_update",
    "lane": "{{ data.channel.channel_id }}",
}


def messages(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(body)
    return [describe(error, JobSpec) for error in exc.value.errors()]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"name": "-ipx"},
            "name may hold letters, digits, spaces and _ . : - and must start with a letter "
            "or digit",
        ),
        ({"name": ""}, "name must not be empty"),
        ({"name": "x" * 201}, "name may have at most 200 characters (it has 201)"),
        ({"script": "run.py"}, "script must be a script's name: up to 100 letters, digits"),
        ({"timeout_s": 0}, "timeout_s must be more than 0 and at most 86,400 seconds"),
        ({"timeout_s": 90000}, "timeout_s must be more than 0 and at most 86,400 seconds"),
        ({"timeout_s": "soon"}, "timeout_s must be a number"),
        ({"max_attempts": 0}, "max_attempts must be at least 1 and at most 100"),
        ({"max_attempts": 1.5}, "max_attempts must be a whole number"),
        ({"cancel_grace_s": -1}, "cancel_grace_s must be at least 0 and at most 3,600 seconds"),
        # An optional limit keeps its range inside its annotation.
        ({"max_concurrency": 0}, "max_concurrency must be at least 1 and at most 10,000"),
        ({"enabled": "maybe"}, "enabled must be true or false"),
        ({"descripton": "typo"}, "descripton is not a known field; did you mean description?"),
        ({"trigger": {}}, "trigger.event_type is required"),
        (
            {"trigger": {"event_type": "x", "conditions": [{"path": "a", "op": "equals"}]}},
            "trigger.conditions.0.op must be one of 'eq', 'ne',",
        ),
        (
            {"trigger": {"event_type": "x", "conditions": [{"path": "a", "op": "in"}]}},
            "trigger.conditions.0.value: in needs a list value",
        ),
        (
            {"cancel_on": [{"event_type": "x", "running": "perhaps"}]},
            "cancel_on.0.running must be true",
        ),
        # The model's own messages are words already, and name their field.
        ({"command_template": "{{ oops"}, "command_template: unexpected end of template"),
        ({"lane": " "}, "lane must not be blank"),
    ],
)
def test_each_error_in_words(change: dict[str, Any], message: str) -> None:
    [said] = messages({**JOB, **change})
    assert said.startswith(message), said


def test_every_problem_of_a_job_at_once() -> None:
    # Rules between fields (cancel_on needs a lane, the debounce window) and a condition's
    # value are checked even when other fields fail: one answer names them all.
    said = messages(
        {
            **JOB,
            "name": "-x",
            "timeout_s": 0,
            "lane": None,
            "cancel_on": [{"event_type": "channel.removed"}],
            "debounce_s": 10,
            "debounce_max_s": 5,
            "trigger": {
                "event_type": "x",
                "conditions": [{"path": "", "op": "exists", "value": 1}],
            },
        }
    )
    assert [s.split(" ")[0].rstrip(":") for s in said] == [
        "name",
        "trigger.conditions.0.path",
        "trigger.conditions.0.value",
        "timeout_s",
        "debounce_max_s",
        "cancel_on",
    ]
    assert "debounce_max_s (5) must be at least debounce_s (10)" in said
    assert "cancel_on needs a lane: it ends the runs waiting in the event's lane" in said


def test_without_the_model_the_crossed_bound_is_said() -> None:
    error = {"type": "less_than_equal", "loc": ("query", "limit"), "ctx": {"le": 500}}
    assert describe(error) == "limit must be at most 500"
    assert describe({"type": "missing", "loc": ("body", "since"), "msg": "x"}) == (
        "since is required"
    )


def test_unknown_errors_keep_pydantic_s_message_with_their_field() -> None:
    error = {"type": "url_parsing", "loc": ("body", "url"), "msg": "Input should be a URL"}
    assert describe(error) == "url: Input should be a URL"
    assert subject(("body", "trigger", "conditions", 0, "op")) == "trigger.conditions.0.op"
