"""The admin service's settings (environment → one object built at start)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from jobmanager.core.config import DatabaseSettings, RenderSettings


class AdminSettings(DatabaseSettings, RenderSettings):
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8080, ge=1, le=65535)
    # Accepted as an admin API key when set (bootstrap); never logged.
    admin_token: SecretStr | None = None
    cleanup_interval_s: float = Field(default=60.0, gt=0)
    metrics_refresh_s: float = Field(default=10.0, gt=0)
    # Executors that reported within this window make up the catalogue of known scripts.
    executor_report_window_s: float = Field(default=3600.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1)
    admin_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body the admin API reads, in bytes: a larger one is "
        "refused with 413 while it is being read (also without a Content-Length).",
    )
    admin_access_log: bool = Field(
        default=True,
        description="One log line per request (method, path, status, duration, caller) in the "
        "services' log format; health checks and scrapes are logged at DEBUG.",
    )

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "must be at least 16 characters (generate one with `openssl rand -hex 24`)"
            )
        return value
