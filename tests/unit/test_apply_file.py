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
        ("jobs:\n  - name: a\n    script: noop\n", "jobs.0.trigger: Field required"),
        (
            "jobs:\n  - {name: a, script: noop, trigger: {event_type: x}}\n"
            "  - {name: a, script: noop, trigger: {event_type: y}}\n",
            "appears twice",
        ),
        ("settings: {queue: {interval_s: -1}}", "settings.queue.interval_s"),
        (
            "jobs:\n  - {name: a, script: noop, trigger: {event_type: x}, "
            "command_template: '{{ oops'}\n",
            "command_template",
        ),
        ("surprise: 1", "surprise: Extra inputs are not permitted"),
    ],
)
def test_problems_are_reported_with_their_place(text: str, message: str) -> None:
    with pytest.raises(ApplyError, match=message):
        load_document(text, origin="jobs.yaml")
