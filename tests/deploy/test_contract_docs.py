"""The generated contract documents are current, and say what the code says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from deployfiles import ROOT
from typer.testing import CliRunner

from jobmanager.cli import asyncapi, reference
from jobmanager.cli.main import app
from jobmanager.core.messages import ExecutorReport
from jobmanager.core.topology import Topology

ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"


def generated(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def committed(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_committed_asyncapi_document_is_current() -> None:
    assert generated("asyncapi") == committed(ASYNCAPI), (
        "docs/asyncapi.yaml is out of date: run `jobmanager asyncapi --output docs/asyncapi.yaml`"
    )


def test_the_committed_configuration_reference_is_current() -> None:
    assert generated("config-reference") == committed(CONFIGURATION), (
        "docs/CONFIGURATION.md is out of date: run "
        "`jobmanager config-reference --output docs/CONFIGURATION.md`"
    )


def test_every_setting_is_described() -> None:
    assert not reference.missing_descriptions(), (
        "give these settings a Field(description=...) in their class, or a line in "
        "DESCRIPTIONS of src/jobmanager/cli/reference.py"
    )


def test_the_reference_lists_every_variable_of_every_service() -> None:
    text = committed(CONFIGURATION)
    for variable in reference.settings_variables():
        assert f"`{variable}`" in text


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_asyncapi_document_names_the_topology_and_resolves() -> None:
    document = yaml.safe_load(committed(ASYNCAPI))
    t = Topology("jobmanager")
    assert document["asyncapi"].startswith("3.")
    channels = document["channels"]
    queues = {
        c["bindings"]["amqp"]["queue"]["name"]
        for c in channels.values()
        if c["bindings"]["amqp"]["is"] == "queue"
    }
    assert {t.events_queue, t.due_queue, t.work_queue, t.lost_queue, t.results_queue} <= queues
    assert t.dead_queue in queues
    exchanges = {
        c["bindings"]["amqp"]["exchange"]["name"]: c
        for c in channels.values()
        if c["bindings"]["amqp"]["is"] == "routingKey"
    }
    assert {t.events_exchange, t.results_exchange, t.runs_exchange, t.control_exchange} <= set(
        exchanges
    )
    result_keys = {
        c["address"]
        for c in channels.values()
        if c["bindings"]["amqp"].get("exchange", {}).get("name") == t.results_exchange
    }
    assert result_keys == {"run.started", "run.succeeded", "run.failed", ExecutorReport.routing_key}
    # The specification's routing keys of the runs exchange.
    assert channels["runs"]["parameters"]["change"]["enum"] == [
        "queued",
        "started",
        "succeeded",
        "failed",
        "removed",
        "superseded",
    ]
    for model in asyncapi.MODELS:
        assert model.__name__ in document["components"]["schemas"]
    for channel in channels.values():
        for message in channel["messages"].values():
            _resolve(document, message["$ref"])
    for operation in document["operations"].values():
        _resolve(document, operation["channel"]["$ref"])
        for message in operation["messages"]:
            _resolve(document, message["$ref"])
