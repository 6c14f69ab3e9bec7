"""deploy/grafana/jobmanager.json charts metric families the services really export."""

from __future__ import annotations

import json
import re

from deployfiles import DASHBOARD, ROOT
from prometheus_client import REGISTRY, CollectorRegistry

import jobmanager.core.metrics
import jobmanager.executor.metrics
import jobmanager.matcher.metrics
from jobmanager.admin.metrics import Metrics

# The families the deployment documentation promises (README, "Observability").
PROMISED = {
    "jobmanager_events",
    "jobmanager_runs",
    "jobmanager_run_duration_seconds",
    "jobmanager_lane_backlog",
    "jobmanager_dispatch_lag_seconds",
    "jobmanager_script_failures",
    "jobmanager_executor_busy_slots",
    "jobmanager_executor_slots",
    "jobmanager_admin_requests",
    "jobmanager_admin_request_seconds",
    "jobmanager_rows",
    "jobmanager_lanes",
}
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def families(registry: CollectorRegistry) -> set[str]:
    return {metric.name for metric in registry.collect()}


def exported() -> set[str]:
    # Importing the services' metrics modules registered their families.
    assert jobmanager.core.metrics and jobmanager.executor.metrics and jobmanager.matcher.metrics
    return families(REGISTRY) | families(Metrics().registry)


def family(sample_name: str) -> str:
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name


def charted() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names |= {family(n) for n in re.findall(r"\bjobmanager_[a-z_]+", target["expr"])}
    return names


def test_every_charted_family_is_exported() -> None:
    missing = charted() - exported()
    assert not missing, f"the dashboard charts families no service exports: {sorted(missing)}"


def test_every_promised_family_is_exported_charted_and_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    assert PROMISED <= exported()
    assert PROMISED <= charted()
    for name in PROMISED:
        assert f"`{name}" in readme, f"README does not document {name}"


def test_panels_use_the_dashboard_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
