"""Parsing `apply` files (pure): the SPEC's example, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobmanager.cli.apply import ApplyError, load_document

SPEC_EXAMPLE = """
settings:
  queue: {interval_s: 2.0}
  executed_cleanup: {enabled: true, method: both, max_rows: 5000, max_age_s: 604800, cleanup_amount: 500}
  failed_cleanup: {enabled: true, method: row_age, max_rows: 5000, max_age_s: 2592000, cleanup_amount: 500}
jobs:
  - name: ipx-update
    trigger:
      event_type: "channel.updated"
      conditions:
        - {path: data.channel.origin, op: eq, value: avcm}
        - {path: data.changes.pod_service, op: exists}
    script: ipx_update
    command_template: '{{ data.channel | tojson }}'
    lane: '{{ data.channel.channel_id }}'
    timeout_s: 120
    max_attempts: 3
    retry_backoff_s: 10
"""


def test_the_spec_example_parses() -> None:
    document = load_document(SPEC_EXAMPLE)
    assert document.settings.queue is not None and document.settings.queue.interval_s == 2.0
    [job] = document.jobs
    assert job.name == "ipx-update" and len(job.trigger.conditions) == 2


def test_the_shipped_demo_file_parses() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
    assert len(load_document(path.read_text()).jobs) >= 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: [", "not valid YAML"),
        ("jobs:\n  - name: a\n    script: noop\n", 'job "a": trigger is required'),
        (
            "jobs:\n  - {name: a, script: noop, trigger: {event_type: x}}\n"
            "  - {name: a, script: noop, trigger: {event_type: y}}\n",
            'job "a" appears 2 times',
        ),
        (
            "settings: {queue: {interval_s: -1}}",
            "settings.queue.interval_s must be at least 0 and at most 86,400 seconds",
        ),
        (
            "jobs:\n  - {name: a, script: noop, trigger: {event_type: x}, "
            "command_template: '{{ oops'}\n",
            "command_template",
        ),
        ("surprise: 1", "surprise is not a known field"),
        ("jobs:\n  - {script: noop, trigger: {event_type: x}}\n", r"job #1 \(no name\): name is"),
    ],
)
def test_problems_are_reported_with_their_place(text: str, message: str) -> None:
    with pytest.raises(ApplyError, match=message):
        load_document(text, origin="jobs.yaml")


def test_every_problem_of_a_file_at_once_each_job_by_its_name() -> None:
    text = """
jobs:
  - name: ipx-update
    trigger: {event_type: channel.updated, conditions: [{path: data.x, op: greater}]}
    script: noop
    timeout_s: 0
    lane: null
    cancel_on: [{event_type: channel.removed}]
  - {name: report, trigger: {event_type: x}, script: run.py}
  - {name: report, trigger: {event_type: y}, script: noop}
"""
    with pytest.raises(ApplyError) as refused:
        load_document(text, origin="jobs.yaml")
    lines = str(refused.value).splitlines()
    assert lines[0] == "jobs.yaml: 5 problem(s)"
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [
        'job "ipx-update"',
        'job "ipx-update"',
        'job "ipx-update"',
        'job "report"',
        'job "report" appears 2 times',
    ]
    assert '  job "ipx-update": timeout_s must be more than 0 and at most 86,400 seconds' in lines
    assert "jobs.0" not in str(refused.value)
