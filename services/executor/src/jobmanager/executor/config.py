"""The executor's settings: the shared ones plus where scripts live and how many run at once."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, PrivateAttr, field_validator, model_validator

from jobmanager.core.config import ServiceSettings
from jobmanager.core.messages import MAX_FEEDBACK, MAX_OUTPUT_TAIL


def default_scripts_dir() -> Path:
    """The repository's shipped `scripts/` when running from a checkout, else `./scripts`."""
    # config.py → executor → jobmanager → src → services/executor → services → repository root
    root = Path(__file__).resolve().parents[5]
    shipped = root / "scripts"
    if (root / "pyproject.toml").is_file() and shipped.is_dir():
        return shipped
    return Path("scripts")


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ExecutorSettings(ServiceSettings):
    """Settings of one executor instance (environment variables `JOBMANAGER_*`)."""

    scripts_dir: Path = Field(default_factory=default_scripts_dir, validate_default=True)
    concurrency: int = Field(default=4, ge=1, le=256)
    executor_id: str = Field(default_factory=default_executor_id, min_length=1, max_length=200)
    # Output kept with a result (what operators see) and stdout kept to find the result line.
    # At most what the ledger keeps of a result (the contract's bounds).
    output_tail_bytes: int = Field(default=4096, ge=256, le=MAX_OUTPUT_TAIL)
    result_scan_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    feedback_max_chars: int = Field(default=4000, ge=100, le=MAX_FEEDBACK)
    # After an executable exits, how long to keep reading pipes its leftover children hold.
    exit_drain_s: float = Field(default=0.25, gt=0, le=10)
    # How often the executor reports its scripts and load (executor.report).
    report_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # A script still running this long after it started is reported as started (run.started);
    # a shorter one is reported once, by its result, which carries its start time. 0 reports
    # every start at once.
    report_started_after_s: float = Field(default=0.05, ge=0, le=60)
    # The PATH scripts get (their environment is minimal, not the executor's).
    script_search_path: str = "/usr/local/bin:/usr/bin:/bin"
    # Names of variables handed on to scripts, comma-separated (for example where a script
    # finds its own configuration). Nothing else of the executor's environment reaches them.
    script_env: str = ""
    _script_values: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _capture_script_env(self) -> ExecutorSettings:
        names = [n.strip() for n in self.script_env.split(",") if n.strip()]
        for name in names:
            if name.startswith("JOBMANAGER_"):
                raise ValueError(f"script_env: {name} is the executor's own setting")
        # Read once, here, with the rest of the environment.
        self._script_values = {n: os.environ[n] for n in names if n in os.environ}
        self._script_values.setdefault("HOME", os.environ.get("HOME", "/"))
        return self

    def script_environment(self) -> dict[str, str]:
        """The environment every script starts with (before its per-run variables)."""
        return {
            **self._script_values,
            "PATH": self.script_search_path,
            "LANG": "C.UTF-8",
        }

    @field_validator("scripts_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()
