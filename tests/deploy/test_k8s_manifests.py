"""deploy/k8s: the manifests parse, are namespace-agnostic and agree with the code."""

from __future__ import annotations

from typing import Any

import pytest
from deployfiles import (
    ALL_INTERFACES,
    K8S,
    TARGETS,
    TMP,
    check_environment,
    compose,
    container_argv,
    containers,
    env_value,
    find,
    image_target,
    image_user,
    kustomization,
    load_all,
    manifests,
    one,
    port_number,
    project_version,
    reader,
    secret_example,
    settings_of,
)

from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec

WORKLOADS = {
    "jobmanager-matcher": "matcher",
    "jobmanager-executor": "executor",
    "jobmanager-admin": "admin",
    "jobmanager-migrate": "cli",
}


def workload(name: str) -> dict[str, Any]:
    (doc,) = [d for d in find("Deployment") + find("Job") if d["metadata"]["name"] == name]
    return doc


def container(name: str) -> dict[str, Any]:
    (only,) = containers(workload(name))
    return only


def pod_labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = workload(name)["spec"]["template"]["metadata"]["labels"]
    return labels


def test_kustomization_lists_every_manifest_and_they_parse() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    for doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert "namespace" not in doc["metadata"], "manifests must be namespace-agnostic"
    assert "namespace" not in kustomization()


def test_the_workloads_are_there() -> None:
    assert {d["metadata"]["name"] for d in find("Deployment")} == {
        "jobmanager-matcher",
        "jobmanager-executor",
        "jobmanager-admin",
    }
    assert [d["metadata"]["name"] for d in find("Job")] == ["jobmanager-migrate"]
    assert find("Service") and find("ConfigMap") and find("PodDisruptionBudget")


def test_images_are_the_dockerfile_targets_with_the_project_version() -> None:
    used = {c["image"] for w in WORKLOADS for c in containers(workload(w))}
    for name, target in WORKLOADS.items():
        assert image_target(container(name)["image"]) == target
    images = {i["name"]: i for i in kustomization()["images"]}
    assert set(images) == used == {f"jobmanager-{t}" for t in TARGETS}
    assert {i["newTag"] for i in images.values()} == {project_version()}
    compose_images = {
        s["image"].split(":")[0] for s in compose()["services"].values() if "build" in s
    }
    assert compose_images == used, "compose and Kubernetes use the same images"


@pytest.mark.parametrize("name", WORKLOADS)
def test_containers_keep_tini_and_run_a_real_program(name: str) -> None:
    c = container(name)
    target = image_target(c["image"])
    assert "command" not in c, "set args, not command: the image's tini must stay PID 1"
    assert reader(container_argv(target, None, c.get("args"))) == WORKLOADS[name]


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_variable_a_container_gets_is_one_of_its_settings(name: str) -> None:
    c = container(name)
    runs = WORKLOADS[name]
    check_environment([e["name"] for e in c.get("env", [])], runs, name)
    secret = secret_example()["stringData"]
    for item in c.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret_example()["metadata"]["name"]
            assert ref["key"] in secret, f"{name}: the Secret has no {ref['key']}"
            assert ref["key"] == item["name"], f"{name}: {item['name']} from {ref['key']}"
    for source in c.get("envFrom", []):
        config_map = one("ConfigMap", source["configMapRef"]["name"])
        check_environment(list(config_map["data"]), runs, f"{name} (envFrom)")


def test_secret_and_config_map_keys_are_settings() -> None:
    every = set().union(*(settings_of(r) for r in ("matcher", "executor", "admin", "cli")))
    for key in secret_example()["stringData"]:
        assert key in every or not key.startswith("JOBMANAGER_"), key
    keda_keys = {
        ref["key"]
        for auth in find("TriggerAuthentication")
        for ref in auth["spec"]["secretTargetRef"]
    }
    for key in secret_example()["stringData"]:
        assert key.startswith("JOBMANAGER_") or key in keda_keys, f"{key} is used by nothing"
    (config_map,) = find("ConfigMap")
    assert config_map["data"]["JOBMANAGER_LOG_FORMAT"] == "json"


def test_the_executor_has_no_database_and_outlasts_its_runs() -> None:
    names = {e["name"] for e in container("jobmanager-executor").get("env", [])}
    assert "JOBMANAGER_DATABASE_URL" not in names
    spec = workload("jobmanager-executor")["spec"]
    assert "replicas" not in spec, "KEDA owns the executors' replica count"
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > JobSpec.model_fields["timeout_s"].default, "in-flight runs get their timeout"


def test_admin_probes_ask_healthz_and_readyz_on_its_port() -> None:
    c = container("jobmanager-admin")
    assert env_value(c, "JOBMANAGER_ADMIN_HOST") == ALL_INTERFACES
    port = int(env_value(c, "JOBMANAGER_ADMIN_PORT") or 0)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == port


@pytest.mark.parametrize("name", ["jobmanager-matcher", "jobmanager-executor"])
def test_worker_probes_ask_the_metrics_endpoint_they_serve(name: str) -> None:
    c = container(name)
    port = int(env_value(c, "JOBMANAGER_METRICS_PORT") or 0)
    assert port, f"{name} must serve metrics for its probes"
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/metrics"
        assert port_number(c, get["port"]) == port


@pytest.mark.parametrize("name", ["jobmanager-matcher", "jobmanager-executor", "jobmanager-admin"])
def test_scrape_annotations_point_at_the_metrics(name: str) -> None:
    annotations = workload(name)["spec"]["template"]["metadata"]["annotations"]
    c = container(name)
    port = env_value(c, "JOBMANAGER_METRICS_PORT") or env_value(c, "JOBMANAGER_ADMIN_PORT")
    assert annotations["prometheus.io/port"] == port
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", WORKLOADS)
def test_pods_run_unprivileged_with_a_read_only_root(name: str) -> None:
    pod = workload(name)["spec"]["template"]["spec"]
    c = container(name)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        str(pod["securityContext"]["runAsUser"])
        == image_user(image_target(c["image"])).split(":")[0]
    )
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert "emptyDir" in volumes[mounts[TMP]], "scripts and libraries need a writable /tmp"


def test_selectors_match_their_pods() -> None:
    for deployment in find("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "jobmanager-admin")
    assert service["spec"]["selector"].items() <= pod_labels("jobmanager-admin").items()
    (port,) = service["spec"]["ports"]
    assert port_number(container("jobmanager-admin"), port["targetPort"]) == 8080


def test_every_deployment_has_exactly_one_disruption_budget() -> None:
    for deployment in find("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [
            pdb
            for pdb in find("PodDisruptionBudget")
            if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(budgets) == 1, deployment["metadata"]["name"]


def test_keda_scales_the_executors_on_the_work_queue() -> None:
    (scaled,) = find("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "jobmanager-executor"
    assert spec.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    metadata = trigger["metadata"]
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata values are strings"
    (config_map,) = find("ConfigMap")
    assert metadata["queueName"] == Topology(config_map["data"]["JOBMANAGER_NAMESPACE"]).work_queue
    assert metadata["queueName"] == "jobmanager.work"
    assert metadata["mode"] == "QueueLength"
    # Requests being run count too: over AMQP only the waiting ones would.
    assert metadata["protocol"] == "http" and metadata["excludeUnacknowledged"] == "false"
    assert metadata["value"] == env_value(
        container("jobmanager-executor"), "JOBMANAGER_CONCURRENCY"
    )
    auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret_example()["metadata"]["name"]
        assert ref["key"] in secret_example()["stringData"]


def test_the_secret_example_is_not_applied() -> None:
    assert "secret.example.yaml" not in kustomization()["resources"]
    (secret,) = load_all(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert len(secret["stringData"]["JOBMANAGER_ADMIN_TOKEN"]) >= 16
