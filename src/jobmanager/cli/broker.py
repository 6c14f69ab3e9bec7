"""`jobmanager broker-permissions`: each role's RabbitMQ user and permissions, from the topology.

The names come from the settings (`JOBMANAGER_NAMESPACE`, `JOBMANAGER_EVENTS_EXCHANGE`) unless
given as options, so the output fits the installation it is run for. See
`deploy/rabbitmq/README.md` for the roles and `jobmanager.core.permissions` for how the
expressions are made.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer


class Format(enum.StrEnum):
    rabbitmqctl = "rabbitmqctl"
    json = "json"


def broker_permissions(
    namespace: Annotated[
        str | None, typer.Option(help="default: JOBMANAGER_NAMESPACE (jobmanager)")
    ] = None,
    events_exchange: Annotated[
        str | None,
        typer.Option(help="default: JOBMANAGER_EVENTS_EXCHANGE (channel-manager.events)"),
    ] = None,
    vhost: Annotated[str, typer.Option(help="the RabbitMQ virtual host")] = "/",
    format: Annotated[
        Format, typer.Option(help="shell commands, or a definitions document (JSON)")
    ] = Format.rabbitmqctl,
    output: Annotated[Path | None, typer.Option(help="write it here instead of to stdout")] = None,
) -> None:
    """Each role's RabbitMQ permissions (matcher, admin, executor, Channel Manager)."""
    from jobmanager.core import permissions
    from jobmanager.core.config import ServiceSettings
    from jobmanager.core.topology import Topology

    settings = ServiceSettings()
    topology = Topology(
        namespace or settings.namespace,
        events_exchange or settings.events_exchange,
        settings.events_binding,
    )
    if format is Format.json:
        text = json.dumps(permissions.definitions(topology, vhost=vhost), indent=2) + "\n"
    else:
        text = permissions.rabbitmqctl(topology, vhost=vhost)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
