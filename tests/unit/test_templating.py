"""Command and lane templates: sandboxed Jinja2, strict about undefined names, plain JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobmanager.jobs.spec import DEFAULT_COMMAND_TEMPLATE
from jobmanager.jobs.templating import (
    MAX_LANE_LEN,
    TemplateError,
    compile_template,
    render_command,
    render_lane,
    template_context,
)

EVENT: dict[str, Any] = {
    "event_id": "4b1f",
    "event_type": "channel.updated",
    "source": "channel-manager",
    "occurred_at": "2026-11-24T10:00:00Z",
    "data": {
        "channel": {
            "channel_id": "ESPN-HD",
            "name": "ESPN HD",
            "origin": "avcm",
            "pod_service": "pod-7",
            "compression_element": "enc-12",
            "valid": True,
        },
        "changes": {"pod_service": {"old": "pod-3", "new": "pod-7"}},
    },
}


def test_spec_example_command_and_lane() -> None:
    command = render_command(compile_template("{{ data.channel | tojson }}"), EVENT)
    assert json.loads(command) == EVENT["data"]["channel"]
    assert command.startswith('{"channel_id": "ESPN-HD"')  # key order kept, not sorted
    assert render_lane(compile_template("{{ data.channel.channel_id }}"), EVENT) == "ESPN-HD"


def test_default_template_renders_the_whole_event() -> None:
    command = render_command(compile_template(DEFAULT_COMMAND_TEMPLATE), EVENT)
    assert json.loads(command) == EVENT


def test_templates_may_be_given_as_source() -> None:
    assert render_command("{{ event_type }} from {{ source }}", EVENT) == (
        "channel.updated from channel-manager"
    )


def test_context_has_top_level_fields_and_event() -> None:
    context = template_context(EVENT)
    assert context["event"] is EVENT
    for key in ("event_id", "event_type", "source", "occurred_at", "data"):
        assert context[key] == EVENT[key]


def test_no_html_escaping() -> None:
    event = {**EVENT, "data": {"text": "<a href='x'>&</a>", "name": "Télé"}}
    assert render_command("{{ data.text }}", event) == "<a href='x'>&</a>"
    assert render_command("{{ data | tojson }}", event) == (
        '{"text": "<a href=\'x\'>&</a>", "name": "Télé"}'
    )


def test_tojson_indent() -> None:
    assert render_command("{{ data.changes | tojson(indent=1) }}", EVENT).count("\n") == 5


def test_trailing_newline_dropped() -> None:
    assert render_command("{{ event_id }}\n", EVENT) == "4b1f"


def test_undefined_variable_is_an_error() -> None:
    message = "command template: 'dict object' has no attribute 'x'"
    with pytest.raises(TemplateError, match=message):
        render_command(compile_template("{{ data.x }}"), EVENT)
    with pytest.raises(TemplateError, match="'nothing' is undefined"):
        render_command("{{ nothing }}", EVENT)


def test_defined_test_allows_optional_fields() -> None:
    template = "{% if data.x is defined %}{{ data.x }}{% else %}none{% endif %}"
    assert render_command(template, EVENT) == "none"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ data.__class__ }}",
        "{{ data.channel.update({'origin': 'x'}) }}",
        "{{ data.channel.pop('origin') }}",
    ],
)
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(TemplateError, match=r"^command template: .*unsafe"):
        render_command(source, EVENT)
    assert EVENT["data"]["channel"]["origin"] == "avcm"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10000000000 }}",
        "{{ [1] * 10 ** 10 }}",
        "{{ 2 ** 10000000 }}",
        "{% for i in range(10 ** 9) %}{% endfor %}",
    ],
)
def test_sandbox_bounds_resource_hungry_expressions(source: str) -> None:
    template = compile_template(source)  # constant folding would allocate at compile time
    with pytest.raises(TemplateError):
        render_command(template, EVENT)


def test_runtime_errors_become_template_errors() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render_command("{{ 1 / 0 }}", EVENT)


def test_output_limit() -> None:
    template = compile_template("{% for i in range(100) %}{{ data | tojson }}{% endfor %}")
    with pytest.raises(TemplateError, match="output longer than 1000 characters"):
        render_command(template, EVENT, max_len=1000)
    assert len(render_command(template, EVENT)) > 1000


def test_syntax_error_message_has_line() -> None:
    with pytest.raises(TemplateError, match=r"\(line 2\)"):
        compile_template("ok\n{{ data.channel | }}")
    with pytest.raises(TemplateError, match="unexpected end of template"):
        compile_template("{{ data")


def test_compile_is_cached_by_source() -> None:
    assert compile_template("{{ event_id }}-cached") is compile_template("{{ event_id }}-cached")


def test_lane_none_means_no_sequencing() -> None:
    assert render_lane(None, EVENT) is None


def test_lane_literal_and_strip() -> None:
    assert render_lane(compile_template("default"), EVENT) == "default"
    assert render_lane("  pod:{{ data.channel.pod_service }} \n", EVENT) == "pod:pod-7"


def test_lane_empty_is_an_error() -> None:
    with pytest.raises(TemplateError, match="lane template: rendered an empty lane"):
        render_lane("{{ data.channel.missing | default('') }}  ", EVENT)


def test_lane_too_long_is_an_error() -> None:
    assert render_lane("x" * MAX_LANE_LEN, EVENT) == "x" * MAX_LANE_LEN
    with pytest.raises(TemplateError, match=f"longer than {MAX_LANE_LEN} characters"):
        render_lane("x" * (MAX_LANE_LEN + 1), EVENT)
    with pytest.raises(TemplateError, match=f"longer than {MAX_LANE_LEN} characters"):
        render_lane("{% for i in range(10000) %}x{% endfor %}", EVENT)


def test_lane_undefined_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"^lane template: .*no attribute 'nope'"):
        render_lane("{{ data.nope }}", EVENT)
