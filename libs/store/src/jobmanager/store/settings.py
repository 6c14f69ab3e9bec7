"""Operator settings stored in Postgres: the queue interval, Auto Cleanup, event retention.

The same models are the bodies of the admin API's settings routes and the `settings:` part of
an `apply` file.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.store.models import Setting

DAY = 86400.0


class SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(SettingsModel):
    """ "Time between the execution of two jobs" of one lane, in seconds."""

    interval_s: float = Field(default=0.0, ge=0, le=DAY)


class CleanupSettings(SettingsModel):
    """Auto Cleanup of the Executed or Failed table, as in the original's pop-up."""

    enabled: bool = False
    method: Literal["row_count", "row_age", "both"] = "row_count"
    max_rows: int = Field(default=10000, ge=0)
    max_age_s: float = Field(default=30 * DAY, ge=0)
    cleanup_amount: int = Field(default=1000, ge=1, le=100000)


class RetentionSettings(SettingsModel):
    """How long received events are kept."""

    events_s: float = Field(default=7 * DAY, ge=0)


KEYS: dict[str, type[SettingsModel]] = {
    "queue": QueueSettings,
    "executed_cleanup": CleanupSettings,
    "failed_cleanup": CleanupSettings,
    "retention": RetentionSettings,
}

M = TypeVar("M", bound=SettingsModel)


async def load(conn: AsyncConnection, key: str, model: type[M]) -> M:
    """The stored value of a setting, or the model's defaults."""
    value = await conn.scalar(select(Setting.value).where(Setting.key == key))
    return model.model_validate(value) if value is not None else model()


async def save(conn: AsyncConnection, key: str, value: SettingsModel) -> None:
    if key not in KEYS or not isinstance(value, KEYS[key]):
        raise ValueError(f"unknown setting {key!r} or wrong type")
    document = value.model_dump(mode="json")
    statement = insert(Setting).values(key=key, value=document)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[Setting.key],
            set_={"value": statement.excluded.value, "updated_at": func.now()},
        )
    )
