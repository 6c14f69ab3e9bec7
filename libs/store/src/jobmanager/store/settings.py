"""Operator settings stored in Postgres: the queue interval, Auto Cleanup, event retention.

The same models are the bodies of the admin API's settings routes and the `settings:` part of
an `apply` file.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.store.models import Setting

DAY = 86400.0


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true or false")
    return value


# `false` is not a number of seconds nor a count, and "1" is not true: what JSON Schema says
# of these types, and what the API documents.
Seconds = Annotated[float, Strict(), Field(ge=0, le=100 * 365 * 86400)]
Count = Annotated[int, BeforeValidator(_not_a_bool)]
Flag = Annotated[bool, Strict()]


class SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(SettingsModel):
    """ "Time between the execution of two jobs" of one lane, in seconds."""

    interval_s: Annotated[float, Strict(), Field(ge=0, le=DAY)] = 0.0


class CleanupSettings(SettingsModel):
    """Auto Cleanup of the Executed or Failed table, as in the original's pop-up."""

    enabled: Flag = False
    method: Literal["row_count", "row_age", "both"] = "row_count"
    max_rows: Count = Field(default=10000, ge=0)
    max_age_s: Seconds = 30 * DAY
    cleanup_amount: Count = Field(default=1000, ge=1, le=100000)


class RetentionSettings(SettingsModel):
    """How long received events are kept."""

    events_s: Seconds = 7 * DAY


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
