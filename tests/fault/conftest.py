"""The fault suite: each test starts its own stack (real processes, real broker and
database), disturbs it, and proves that nothing was lost or duplicated. Helpers and the
scenario report are in `fault_kit`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fault_kit import UPKEEP
from stack import Stack, running_stack


@pytest.fixture
async def fault_stack(
    amqp_url: str,
    postgres_url: str,
    template_database: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    marker = request.node.get_closest_marker("stack")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    async with running_stack(
        amqp_url,
        postgres_url,
        template_database,
        tmp_path,
        env={**UPKEEP, **options.pop("env", {})},
        **options,
    ) as stack:
        yield stack
