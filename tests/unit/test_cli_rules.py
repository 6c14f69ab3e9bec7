"""The command line's pure rules: which scripts `apply` refuses (the API's rule), what a demo
leaves alone on a database already in use, its lock, and small wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobmanager.cli.apply import load_document, missing_only, script_problems
from jobmanager.cli.demo import DemoError, claim
from jobmanager.cli.main import article
from jobmanager.jobs.spec import JobSpec
from jobmanager.store.jobs import unknown_script

FILE = """
settings:
  queue: {interval_s: 2.0}
  failed_cleanup: {enabled: true}
jobs:
  - {name: kept, trigger: {event_type: a}, script: gone}
  - {name: renamed-script, trigger: {event_type: a}, script: ipx_updat}
  - {name: new, trigger: {event_type: a}, script: noop}
  - {name: new-typo, trigger: {event_type: a}, script: nop}
"""


def spec(name: str, script: str) -> JobSpec:
    return JobSpec.model_validate({"name": name, "trigger": {"event_type": "a"}, "script": script})


def test_the_refusal_lists_the_known_scripts_sorted() -> None:
    assert unknown_script("noop", ["noop"]) is None
    assert unknown_script("ipx_updat", ["noop", "ipx_update", "noop"]) == (
        "unknown script 'ipx_updat'; known scripts: ipx_update, noop"
    )
    assert unknown_script("noop", []) == (
        "unknown script 'noop'; known scripts: none: no executor has reported its scripts lately"
    )


def test_apply_checks_new_jobs_and_changed_scripts_as_the_api_does() -> None:
    document = load_document(FILE)
    stored = {"kept": spec("kept", "gone"), "renamed-script": spec("renamed-script", "noop")}
    problems = script_problems(document, stored, ["noop", "ipx_update"])
    # `kept` keeps a script no executor offers any more: as a PATCH without `script`, fine.
    assert problems == [
        "job \"renamed-script\": script: unknown script 'ipx_updat'; "
        "known scripts: ipx_update, noop",
        "job \"new-typo\": script: unknown script 'nop'; known scripts: ipx_update, noop",
    ]


def test_a_used_database_keeps_its_settings_and_jobs() -> None:
    document = load_document(FILE)
    missing, kept = missing_only(document, {"kept", "new"}, {"queue"})
    assert kept == ["settings queue", "job kept", "job new"]
    assert missing.settings.queue is None
    assert missing.settings.failed_cleanup == document.settings.failed_cleanup
    assert [job.name for job in missing.jobs] == ["renamed-script", "new-typo"]
    fresh, nothing = missing_only(document, set(), set())
    assert (fresh, nothing) == (document, [])


def test_one_demo_per_directory(tmp_path: Path) -> None:
    lock = tmp_path / ".jobmanager" / "demo.lock"
    with claim(lock, "http://127.0.0.1:8080"):
        with pytest.raises(DemoError, match=r"already running from this directory \(pid \d+"):
            claim(lock, "http://127.0.0.1:8081")
    with claim(lock, "http://127.0.0.1:8081"):  # released with its file
        assert "8081" in lock.read_text()


@pytest.mark.parametrize(
    ("role", "said"), [("operator", "an"), ("admin", "an"), ("viewer", "a"), ("", "a")]
)
def test_an_operator_key(role: str, said: str) -> None:
    assert article(role) == said
