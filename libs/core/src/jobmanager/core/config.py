"""Settings shared by every service.

Configuration comes only from the environment (and a `.env` file). Each service builds one
settings object at start and passes it down; nothing reads the environment at import time.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ServiceSettings(BaseSettings):
    """What every service needs: the broker, the namespace and logging."""

    model_config = SettingsConfigDict(
        env_prefix="JOBMANAGER_", env_file=".env", extra="ignore", frozen=True
    )

    amqp_url: str = Field(
        default="amqp://guest:guest@localhost:5672/",
        description="The RabbitMQ broker (`amqp://` or `amqps://`, with user, password, vhost).",
    )
    namespace: str = Field(
        default="jobmanager",
        description="Prefix of our exchanges and queues, so that installations share a broker.",
    )
    events_exchange: str = Field(
        default="channel-manager.events",
        description="The Channel Manager's topic exchange (not prefixed; declared if missing).",
    )
    events_binding: str = Field(
        default="#",
        description="Routing-key pattern binding the events queue to the events exchange.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level (case-insensitive)."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` for people, `json` for log pipelines (one object per line, with "
        "`run_id` and `event_id` where a line concerns a run or an event).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="When set, the matcher and executors serve Prometheus metrics on this port "
        "(`/metrics`); the admin always serves them on its own port.",
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value

    @field_validator("namespace", "events_exchange")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("letters, digits, '_', '.', '-' only (at most 100)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class DatabaseSettings(ServiceSettings):
    """Settings of the services that use Postgres (matcher, admin, CLI)."""

    database_url: str = Field(
        default="postgresql://postgres@localhost:5432/jobmanager",
        description="The Postgres database (a plain `postgresql://` URL; the driver is ours).",
    )

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL")
        return value


class RenderSettings(ServiceSettings):
    """The limits of rendering a command or lane template (matcher and admin alike)."""

    render_cpu_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="CPU time one render (a job's command and lane for one event) may use; "
        "past it the run fails with Feedback naming the limit (a dry run: 422). A worker that "
        "does not answer within 1.5 times this plus 0.5 s is killed.",
    )
    render_memory_mb: int = Field(
        default=64,
        ge=16,
        le=4096,
        description="Memory (MiB of address space, beyond what a render worker holds when "
        "idle) one render may use; past it the run fails with Feedback naming the limit.",
    )
    render_workers: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Render worker processes per service; the renders of a batch of events "
        "are spread over them.",
    )


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)
