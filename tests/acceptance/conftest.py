"""The acceptance tests share one running stack (see `stack.py`) per module; tests keep
out of each other's way with event types of their own (`Stack.job()` makes them unique)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from stack import Stack, running_stack


@pytest.fixture(scope="module")
async def stack(
    amqp_url: str,
    postgres_url: str,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with running_stack(
        amqp_url,
        postgres_url,
        template_database,
        tmp_path_factory.mktemp("stack"),
    ) as running:
        yield running
