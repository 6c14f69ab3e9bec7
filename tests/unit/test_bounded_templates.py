"""Which templates may be rendered in the service's own process (`templating.is_bounded`):
paths into the event through a few filters, nothing that loops, calls, operates or repeats."""

from __future__ import annotations

import pytest

from jobmanager.jobs.templating import MAX_BOUNDED_EXPRESSIONS, is_bounded

BOUNDED = [
    "{{ data.channel | tojson }}",
    "{{ data.channel.channel_id }}",
    "{{ event_type }} {{ data.channel.channel_id }}",
    "{{ event | tojson }}",
    "{{ data.channel.name | default('') }}",
    '{{ data["channel"][0] }}',
    "{{ data.name | lower | tojson }}",
    "plain text",
    None,
]
NOT_BOUNDED = [
    "{% for i in range(3) %}x{% endfor %}",  # a loop
    "{% set x = data %}{{ x }}",  # a statement
    "{{ ''.ljust(100) }}",  # a call
    "{{ data.x * 3 }}",  # an operator
    "{{ data.x ~ data.y }}",  # concatenation
    "{{ data.x | e | e }}",  # growth on growth
    "{{ data.x | tojson(4) }}",  # an argument (indent)
    "{{ data.x | center }}",  # a filter not in the lists
    "{{ data[data.k] }}",  # a computed key
    "{{ data.x if data.y else data.z }}",  # a condition
    "{{ data.x | default(data.y) }}",  # a default that is not a constant
    "{{ unclosed",  # does not parse
    "{{ x }}" * (MAX_BOUNDED_EXPRESSIONS + 1),  # too many expressions
]


@pytest.mark.parametrize("source", BOUNDED)
def test_paths_through_simple_filters_are_bounded(source: str | None) -> None:
    assert is_bounded(source)


@pytest.mark.parametrize("source", NOT_BOUNDED)
def test_anything_that_can_loop_call_or_repeat_is_not(source: str) -> None:
    assert not is_bounded(source)
