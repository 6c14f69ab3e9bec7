"""The executor's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobmanager.executor.config import ExecutorSettings, default_scripts_dir

REPOSITORY = Path(__file__).resolve().parents[2]


def test_default_scripts_dir_is_the_shipped_one() -> None:
    assert default_scripts_dir() == REPOSITORY / "scripts"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOBMANAGER_SCRIPTS_DIR", str(tmp_path))
    monkeypatch.setenv("JOBMANAGER_CONCURRENCY", "9")
    monkeypatch.setenv("JOBMANAGER_EXECUTOR_ID", "exec-a")
    settings = ExecutorSettings()
    assert settings.scripts_dir == tmp_path
    assert settings.concurrency == 9
    assert settings.executor_id == "exec-a"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCRIPTS_DIR", "CONCURRENCY", "EXECUTOR_ID", "OUTPUT_TAIL_BYTES"):
        monkeypatch.delenv(f"JOBMANAGER_{name}", raising=False)
    settings = ExecutorSettings()
    assert settings.concurrency == 4
    assert settings.output_tail_bytes == 4096
    assert settings.executor_id.rsplit("-", 1)[1].isdigit()
    assert settings.scripts_dir.is_absolute()


def test_relative_scripts_dir_is_made_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBMANAGER_SCRIPTS_DIR", "some/scripts")
    assert ExecutorSettings().scripts_dir == Path.cwd() / "some/scripts"


@pytest.mark.parametrize("concurrency", [0, -1])
def test_concurrency_is_at_least_one(concurrency: int) -> None:
    with pytest.raises(ValidationError):
        ExecutorSettings(concurrency=concurrency)


def test_only_named_variables_reach_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPX_CONFIG_PATH", "/etc/ipx.json")
    monkeypatch.setenv("SECRET_TOKEN", "do-not-pass")
    monkeypatch.setenv("JOBMANAGER_SCRIPT_ENV", "IPX_CONFIG_PATH, ABSENT")
    env = ExecutorSettings().script_environment()
    assert env["IPX_CONFIG_PATH"] == "/etc/ipx.json"
    assert "SECRET_TOKEN" not in env and "ABSENT" not in env
    assert "JOBMANAGER_SCRIPT_ENV" not in env


def test_the_executors_own_settings_cannot_be_handed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBMANAGER_SCRIPT_ENV", "JOBMANAGER_AMQP_URL")
    with pytest.raises(ValueError, match="the executor's own setting"):
        ExecutorSettings()
