"""The AsyncAPI 3 document of the AMQP contract, generated from the code.

Message payloads come from the pydantic models in `jobmanager.core.messages`, names from
`jobmanager.core.topology.Topology` (default namespace), routing keys from the models
themselves, so the document cannot drift from what the services send. `jobmanager asyncapi
--output docs/asyncapi.yaml` refreshes the committed copy; a test fails when it is stale.

Operations are described from Job Manager's side (`send`: one of our services publishes,
`receive`: one consumes), each tagged with the service that does it. The Channel Manager and
integrations are the other side of the `events`, `runs` and `results` channels.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from jobmanager.cli.asyncapi_channels import channels, operations
from jobmanager.core.messages import (
    CancelRequest,
    ControlMessage,
    Event,
    ExecutorReport,
    JobNotice,
    JobRequest,
    JobResult,
    RunNotice,
    RunStarted,
)
from jobmanager.core.topology import ERROR_HEADER, Topology

HEADER = (
    "# The AMQP contract of Job Manager. Generated from jobmanager.core.messages and\n"
    "# jobmanager.core.topology by `jobmanager asyncapi --output docs/asyncapi.yaml`;\n"
    "# do not edit by hand.\n"
)
MODELS: tuple[type[BaseModel], ...] = (
    Event,
    JobRequest,
    RunStarted,
    JobResult,
    ExecutorReport,
    RunNotice,
    JobNotice,
    ControlMessage,
    CancelRequest,
)


class _Schema(GenerateJsonSchema):
    """JSON Schema without a generated title per property ("Event Id"): noise in a contract."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _reflow(text: str) -> str:
    """A docstring as prose: lines of a paragraph joined, paragraphs kept apart."""
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _schemas() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(model, "validation") for model in MODELS],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schema,
    )
    schemas: dict[str, Any] = defs["$defs"]
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = _reflow(schema["description"])
    return schemas


def _summary(model: type[BaseModel]) -> str:
    return _reflow(model.__doc__ or model.__name__).split("\n\n")[0]


def _message(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "name": model.__name__,
        "title": model.__name__,
        "summary": _summary(model),
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
    }


def _parked() -> dict[str, Any]:
    return {
        "name": "Parked",
        "title": "Parked message",
        "summary": "A message a consumer could not handle, moved aside with the reason.",
        "description": (
            "The body is the original message, unchanged (it may not even be JSON). Parked by "
            "the consumer itself, with the headers below; if even that fails, the queue's "
            "dead-letter settings move it here with the broker's `x-death` header instead."
        ),
        "headers": {
            "type": "object",
            "properties": {
                ERROR_HEADER: {"type": "string", "description": "Why it was parked."},
                "x-jobmanager-queue": {"type": "string", "description": "Routing key it had."},
                "x-jobmanager-exchange": {"type": "string", "description": "Exchange it came by."},
            },
        },
        "payload": {"description": "The original message body."},
    }


def document(topology: Topology | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a mapping (default namespace unless one is given)."""
    t = topology or Topology("jobmanager")
    messages = {model.__name__: _message(model) for model in MODELS}
    messages["Parked"] = _parked()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Job Manager AMQP contract",
            "version": version("jobmanager"),
            "description": (
                "Channel Manager events become sequenced, retried, audited script runs. "
                "Messages are JSON (`content_type: application/json`), persistent, published "
                "with publisher confirms. Our exchanges and queues carry the prefix "
                f"`JOBMANAGER_NAMESPACE` (here the default, `{t.namespace}`). Every queue we "
                f"consume dead-letters into `{t.dead_queue}`; a message we cannot handle is "
                f"parked there with the reason in the `{ERROR_HEADER}` header.\n\n"
                "The matcher declares the topology (so does the Python executor); each queue's "
                "binding gives its arguments (`x-arguments`). An executor written from this "
                "document declares nothing of ours but its own cancel queue: it checks the "
                "queues it uses passively, or declares them with exactly those arguments (a "
                "queue declared again with other arguments is a channel error for whoever "
                "declares it). `docs/EXECUTORS.md` lists every duty of an executor."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ, as configured by `JOBMANAGER_AMQP_URL`.",
            }
        },
        "channels": channels(t),
        "operations": operations(),
        "components": {"schemas": _schemas(), "messages": messages},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-paragraph texts as literal blocks, which read like the docstrings they come from."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(topology: Topology | None = None) -> str:
    """The document as YAML, with a header saying how it was made."""
    body = yaml.dump(
        document(topology), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return HEADER + body
