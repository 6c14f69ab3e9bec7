"""docker-compose.yml: the whole system on one machine, consistent with the images and code."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deployfiles import (
    ALL_INTERFACES,
    DOCKERFILE,
    ROOT,
    check_environment,
    compose,
    compose_environment,
    container_argv,
    dockerfile,
    image_target,
    reader,
)

OURS = ("migrate", "matcher", "executor", "admin")


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def program(name: str) -> str:
    service = services()[name]
    target = service["build"]["target"]
    return reader(container_argv(target, service.get("entrypoint"), service.get("command")))


def test_the_system_is_all_there() -> None:
    # The README's `docker compose up -d rabbitmq postgres` keeps working.
    assert {"rabbitmq", "postgres", *OURS} <= set(services())
    assert "management" in services()["rabbitmq"]["image"]
    assert "15672:15672" in services()["rabbitmq"]["ports"]
    assert "8080:8080" in services()["admin"]["ports"]


@pytest.mark.parametrize("name", OURS)
def test_our_services_are_built_from_the_dockerfile_target_their_image_names(name: str) -> None:
    service = services()[name]
    build = service["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["target"] in dockerfile()
    assert image_target(service["image"]) == build["target"]


@pytest.mark.parametrize("name", OURS)
def test_commands_are_real_and_the_environment_holds_only_their_settings(name: str) -> None:
    runs = program(name)
    assert runs == (name if name != "migrate" else "cli")
    check_environment(list(compose_environment(services()[name])), runs, f"compose {name}")


def test_migrate_runs_once_and_the_services_wait_for_it() -> None:
    migrate = services()["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("matcher", "admin"):
        assert services()[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_every_condition_is_one_the_dependency_can_meet() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):  # the short form: started, no condition
            depends_on = {d: {"condition": "service_started"} for d in depends_on}
        for dependency, spec in depends_on.items():
            target = services()[dependency]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health check"
            if spec["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} must be one-shot"


def test_the_executors_are_two_with_the_scripts_mounted_and_no_database() -> None:
    executor = services()["executor"]
    env = compose_environment(executor)
    assert executor["deploy"]["replicas"] == 2
    mounts = [v.split(":") for v in executor["volumes"]]
    assert ["./scripts", env["JOBMANAGER_SCRIPTS_DIR"], "ro"] in mounts
    assert "JOBMANAGER_DATABASE_URL" not in env
    assert "postgres" not in executor.get("depends_on", {})


def test_health_checks_ask_the_ports_the_services_listen_on() -> None:
    admin = services()["admin"]
    env = compose_environment(admin)
    assert env["JOBMANAGER_ADMIN_HOST"] == ALL_INTERFACES
    check = " ".join(admin["healthcheck"]["test"])
    assert f"127.0.0.1:{env['JOBMANAGER_ADMIN_PORT']}/readyz" in check
    for name in ("matcher", "executor"):
        port = compose_environment(services()[name])["JOBMANAGER_METRICS_PORT"]
        check = " ".join(services()[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/metrics" in check, name


def test_data_lives_in_named_volumes_and_mounted_files_exist() -> None:
    volumes = set(compose()["volumes"])
    assert any(v.startswith("rabbitmq-data:") for v in services()["rabbitmq"]["volumes"])
    assert any(v.startswith("postgres-data:") for v in services()["postgres"]["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"


def test_broker_policies_are_imported_before_the_consumers_start() -> None:
    policies = services()["rabbitmq-policies"]
    assert "import" in policies["entrypoint"]
    assert any("deploy/rabbitmq/definitions.json" in v for v in policies["volumes"])
    for name in ("matcher", "executor"):
        condition = services()[name]["depends_on"]["rabbitmq-policies"]["condition"]
        assert condition == "service_completed_successfully"


def test_prometheus_scrapes_every_service_where_it_serves_metrics() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{sd['port']}" for name in sd["names"]}
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
    for name in ("matcher", "executor"):
        assert (
            f"{name}:{compose_environment(services()[name])['JOBMANAGER_METRICS_PORT']}" in targets
        )
    assert f"admin:{compose_environment(services()['admin'])['JOBMANAGER_ADMIN_PORT']}" in targets
    assert services()["prometheus"]["profiles"] == ["observability"]
