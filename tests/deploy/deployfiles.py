"""The deployment files as data, and what the code says they may contain.

The Compose file, the Dockerfile and the Kubernetes manifests are read here (PyYAML and a
small Dockerfile reader); the tests hold them to the code: the commands the containers run,
the settings classes that read their environment, the topology's queue names.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import typer.main
import yaml
from pydantic_settings import BaseSettings

from jobmanager.admin.config import AdminSettings
from jobmanager.cli.main import app
from jobmanager.cli.reference import env_name
from jobmanager.core.config import DatabaseSettings
from jobmanager.executor.config import ExecutorSettings
from jobmanager.matcher.config import MatcherSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
DASHBOARD = ROOT / "deploy" / "grafana" / "jobmanager.json"

# The images (Dockerfile targets) and the settings class of the program each one runs.
TARGETS = ("matcher", "executor", "admin", "cli")
READERS: dict[str, type[BaseSettings]] = {
    "matcher": MatcherSettings,
    "executor": ExecutorSettings,
    "admin": AdminSettings,
    "cli": DatabaseSettings,
}
INIT = ["tini", "--"]
# Values the containers must use (read in files here, never bound or written by a test).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
TMP = "/tmp"  # noqa: S108


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def workspace_packages() -> set[str]:
    """Names of the workspace's members (what `uv sync --package` accepts)."""
    names = set()
    for manifest in [ROOT / "pyproject.toml", *ROOT.glob("libs/*/pyproject.toml")]:
        names.add(tomllib.loads(manifest.read_text())["project"]["name"])
    for manifest in ROOT.glob("services/*/pyproject.toml"):
        names.add(tomllib.loads(manifest.read_text())["project"]["name"])
    return names


# ---------------------------------------------------------------------------- commands


def subcommands() -> set[str]:
    """The `jobmanager` command's subcommands, from the typer app itself."""
    command = typer.main.get_command(app)
    return set(command.commands)  # type: ignore[attr-defined]


def reader(argv: list[str]) -> str:
    """Which program an argv runs, as a key of READERS; fails the test if it is not real.

    Accepted: `[tini --] jobmanager <subcommand> ...` and `[tini --] python -m <module> ...`
    where the module is one of ours and can be run (`<module>.__main__` exists).
    """
    if argv[: len(INIT)] == INIT:
        argv = argv[len(INIT) :]
    assert argv, "the container runs nothing"
    if argv[0] == "jobmanager":
        assert len(argv) > 1, "`jobmanager` without a subcommand"
        assert argv[1] in subcommands(), f"`jobmanager {argv[1]}` is not a subcommand"
        return argv[1] if argv[1] in READERS else "cli"
    assert argv[:2] == ["python", "-m"] and len(argv) > 2, f"not a Job Manager program: {argv}"
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} cannot run"
    name = module.removeprefix("jobmanager.")
    assert name in READERS, f"{module} is not a Job Manager service"
    return name


@cache
def settings_of(reader_name: str) -> set[str]:
    """The environment variables the reader's settings class knows."""
    cls = READERS[reader_name]
    return {env_name(cls, name) for name in cls.model_fields}


def check_environment(names: list[str], reader_name: str, where: str) -> None:
    """Every JOBMANAGER_* variable given to a program is one of its settings."""
    unknown = sorted(
        n for n in names if n.startswith("JOBMANAGER_") and n not in settings_of(reader_name)
    )
    assert not unknown, f"{where}: {unknown} are not settings of the {reader_name}"


# ---------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


@cache
def dockerfile() -> dict[str, Stage]:
    """The Dockerfile's stages by name (ARG defaults substituted into FROM)."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and stage is None:
            key, _, value = rest.partition("=")
            args[key] = value
        elif keyword == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else base
            stage = stages[name] = Stage(name, base)
        else:
            assert stage is not None, f"{keyword} before FROM"
            stage.instructions.append((keyword, rest))
    return stages


def _json_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the JSON (exec) form: {args}"
    return [str(v) for v in value]


def chain(target: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    stages = dockerfile()
    result = []
    name: str | None = target
    while name in stages:
        result.append(stages[name])
        name = stages[name].base
    return result


def image_base(target: str) -> str:
    return chain(target)[-1].base


def image_command(target: str) -> tuple[list[str], list[str]]:
    """The image's ENTRYPOINT and CMD, as Docker computes them through the stages."""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    for stage in chain(target):  # nearest first: the first value found wins
        stage_entry = stage.all("ENTRYPOINT")
        stage_cmd = stage.all("CMD")
        if cmd is None and stage_cmd:
            cmd = _json_form(stage_cmd[-1])
        if entrypoint is None and stage_entry:
            entrypoint = _json_form(stage_entry[-1])
            # An ENTRYPOINT resets the CMD inherited from earlier stages.
            cmd = cmd if cmd is not None else []
    return entrypoint or [], cmd or []


def image_env(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in reversed(chain(target)):
        for args in stage.all("ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def image_user(target: str) -> str:
    for stage in chain(target):
        if users := stage.all("USER"):
            return users[-1]
    return "root"


def container_argv(target: str, entrypoint: list[str] | None, cmd: list[str] | None) -> list[str]:
    """What a container of this image runs, given the overrides of its manifest."""
    image_entry, image_cmd = image_command(target)
    if entrypoint is not None:
        return entrypoint + (cmd or [])
    return image_entry + (cmd if cmd is not None else image_cmd)


def image_target(image: str) -> str:
    """The Dockerfile target of an image name such as `jobmanager-matcher:0.1.0`."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0]
    assert name.startswith("jobmanager-"), f"{image} is not a Job Manager image"
    target = name.removeprefix("jobmanager-")
    assert target in TARGETS, f"{image}: no Dockerfile target {target!r}"
    return target


# ---------------------------------------------------------------------------- YAML files


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


@cache
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    """Every resource the kustomization applies."""
    docs: list[dict[str, Any]] = []
    for resource in kustomization()["resources"]:
        docs += load_all(K8S / resource)
    return tuple(docs)


def secret_example() -> dict[str, Any]:
    (secret,) = load_all(K8S / "secret.example.yaml")
    return secret


def find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for doc in manifests()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = find(kind, name)
    return doc


def workloads() -> list[dict[str, Any]]:
    return find("Deployment") + find("Job")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return spec


def env_value(container: dict[str, Any], name: str) -> str | None:
    for item in container.get("env", []):
        if item["name"] == name:
            value: str | None = item.get("value")
            return value
    return None


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            number: int = item["containerPort"]
            return number
    raise AssertionError(f"container {container['name']} has no port named {port!r}")
