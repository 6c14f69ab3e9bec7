"""JOBMANAGER_LOG_FORMAT=json: one JSON object per line, carrying run_id and event_id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from jobmanager.core.logs import configure


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test (configure() replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("aio_pika", "aiormq")}
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_a_run_line_parses_and_carries_the_ids(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "json", service="executor")
    log = logging.getLogger("jobmanager.executor.service")
    log.info("run %d attempt %d: %s started", 5, 1, "noop", extra={"run_id": 5, "event_id": "e"})
    (line,) = lines(capsys.readouterr().err)
    assert line["run_id"] == 5
    assert line["event_id"] == "e"
    assert line["message"] == "run 5 attempt 1: noop started"
    assert line["service"] == "executor"
    assert line["level"] == "INFO"
    assert line["name"] == "jobmanager.executor.service"
    assert "time" in line


def test_a_traceback_stays_inside_its_line(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "json", service="matcher")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("jobmanager.matcher").exception("failed", extra={"event_id": "e-2"})
    (line,) = lines(capsys.readouterr().err)
    assert line["event_id"] == "e-2"
    assert "RuntimeError: boom" in str(line["exc_info"])


def test_levels_below_the_configured_one_are_dropped(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("WARNING", "json", service="admin")
    logging.getLogger("jobmanager.admin").info("quiet")
    logging.getLogger("jobmanager.admin").warning("loud")
    assert [line["message"] for line in lines(capsys.readouterr().err)] == ["loud"]


def test_text_lines_ignore_the_ids(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "text", service="executor")
    logging.getLogger("jobmanager.executor").info("hello", extra={"run_id": 5})
    assert "executor jobmanager.executor: hello" in capsys.readouterr().err
