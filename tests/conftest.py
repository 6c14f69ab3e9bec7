"""The infrastructure of the tests: a real RabbitMQ and a real Postgres.

Where they come from, in order: the URLs in JOBMANAGER_TEST_AMQP_URL / JOBMANAGER_TEST_DATABASE_URL
(or the local defaults, when something answers there); else containers started with
testcontainers when Docker is available; else the tests that need them are skipped on a laptop
and fail under CI=true, so that CI can never pass without the real services.

Isolation: every test gets its own AMQP namespace (all our exchanges and queues carry it) and,
when it asks for one, its own database cloned from a template migrated once per session.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from jobmanager.core.topology import Topology
from jobmanager.testkit import databases, namespaces

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or 0), 2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    with suppress(Exception):
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    return False


def _unavailable(what: str) -> None:
    message = f"{what} is not reachable and Docker is not available"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: the real service is required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("JOBMANAGER_TEST_AMQP_URL", DEFAULT_AMQP)
    if _answers(url):
        yield url
        return
    if not _docker_available():
        _unavailable(f"RabbitMQ at {url}")
    from testcontainers.rabbitmq import RabbitMqContainer

    image = os.environ.get("JOBMANAGER_TEST_RABBITMQ_IMAGE", "rabbitmq:3.13-management")
    with RabbitMqContainer(image) as rabbit:
        host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a maintenance database on the server (databases are created from it)."""
    url = os.environ.get("JOBMANAGER_TEST_DATABASE_URL", DEFAULT_DB)
    if _answers(url):
        yield url
        return
    if not _docker_available():
        _unavailable(f"PostgreSQL at {url}")
    from testcontainers.postgres import PostgresContainer

    image = os.environ.get("JOBMANAGER_TEST_POSTGRES_IMAGE", "postgres:16")
    with PostgresContainer(image, driver=None) as pg:
        yield pg.get_connection_url()


@pytest.fixture
def namespace() -> str:
    return namespaces.unique("jmtest")


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def topology(amqp_url: str, namespace: str) -> AsyncIterator[Topology]:
    """A declared topology in the test's own namespace, deleted afterwards."""
    async with namespaces.namespace(amqp_url, namespace) as topo:
        yield topo


# -- Postgres ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """A database migrated once per session with `jobmanager migrate`'s code; tests clone it."""
    with databases.template(postgres_url, f"jmtest_template_{os.getpid()}") as name:
        yield name


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh database of this test's own, cloned from the migrated template."""
    async with databases.clone(postgres_url, template_database) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Any]:
    from jobmanager.store.db import create_engine

    eng = create_engine(database_url, pool_size=4)
    try:
        yield eng
    finally:
        await eng.dispose()
