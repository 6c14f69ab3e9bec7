"""The matcher's settings (environment → one object built at start)."""

from __future__ import annotations

from pydantic import Field

from jobmanager.core.config import DatabaseSettings, RenderSettings


class MatcherSettings(DatabaseSettings, RenderSettings):
    event_max_bytes: int = Field(default=1 << 20, ge=1024)
    event_max_depth: int = Field(default=64, ge=4)
    prefetch: int = Field(default=64, ge=1)
    # Messages the events, gate and results consumers apply in one transaction; 1 turns
    # batching off (one transaction per message).
    batch_max: int = Field(default=100, ge=1)
    # Runs due at once are dispatched in the transaction that made them their lane's head
    # (enqueue, a result) instead of through the gate: one queue hop and one transaction
    # fewer per run. Off: every run goes through the gate.
    direct_dispatch: bool = True
    # The gate holds early requests unacked while it waits: it needs room for many lanes.
    gate_prefetch: int = Field(default=2000, ge=1)
    gate_hold_max_s: float = Field(default=5.0, gt=0)
    catalogue_refresh_s: float = Field(default=30.0, gt=0)
    lane_check_s: float = Field(default=10.0, gt=0)
    lane_grace_s: float = Field(default=30.0, gt=0)
    # A running run's executor is presumed lost this long after its timeout.
    running_grace_s: float = Field(default=60.0, gt=0)
    # A dispatched run that has not started this long, with the work queue idle, lost its
    # request on the way to the executors.
    dispatch_grace_s: float = Field(default=60.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1)
