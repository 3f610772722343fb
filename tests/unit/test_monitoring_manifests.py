"""deploy/components/monitoring: the Grafana dashboard asks only for metrics a service exposes (read
from a scrape, with Prometheus' parser), by labels they have; the ServiceMonitor finds every
service's metrics port."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.service import create_service_app
from shared.settings import SERVICES, Settings
from tests.kustomize_builds import OVERLAY, ROOT, kustomize_program, program_build
from tests.support import SECRET

MONITORING = ROOT / "deploy" / "components" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# labels Prometheus adds to every target a ServiceMonitor finds, and the histogram's own
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}
_METRIC = re.compile(r"\bgantry_[a-z0-9_]+")
_BY = re.compile(r"\bby \(([^)]*)\)")
_SELECTOR = re.compile(r"\{([^}]*)\}")


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    found += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return found


def family_of(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


@pytest.fixture
async def exposed(make_uow, tmp_path: Path) -> set[str]:
    """The metric families a service's GET /metrics answers with."""
    api = create_service_app("things", tables=[], routers=[], settings=Settings(home=tmp_path))
    api.state.runtime = SimpleNamespace(uow=await make_uow("things", []), secret=SECRET, parts={}, faust_app=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://things") as http:
        answer = await http.get("/metrics")
    return {family.name for family in text_string_to_metric_families(answer.text)}


async def test_every_metric_the_dashboard_queries_is_exposed(exposed: set[str]) -> None:
    asked = {family_of(name) for query in queries() for name in _METRIC.findall(query)}
    assert len(asked) >= 8, asked
    # the parser names a counter's family without "_total"
    assert {name.removesuffix("_total") for name in asked} <= exposed, asked - exposed


def test_the_dashboard_groups_and_filters_only_by_labels_the_metrics_have() -> None:
    labels_of = {
        metric._name: set(metric._labelnames)
        for metric in vars(metrics).values()
        if isinstance(metric, Counter | Gauge | Histogram)
    }
    for query in queries():
        names = {family_of(name).removesuffix("_total") for name in _METRIC.findall(query)}
        allowed = TARGET_LABELS.union(*(labels_of[name] for name in names))
        used = {label.strip() for group in _BY.findall(query) for label in group.split(",") if label.strip()}
        used |= {pair.split("=")[0].strip() for group in _SELECTOR.findall(query) for pair in group.split(",")}
        assert used <= allowed, f"{query}: {used - allowed}"


@pytest.mark.skipif(kustomize_program() is None, reason="neither kustomize nor kubectl is installed")
def test_the_service_monitor_scrapes_every_service_on_its_http_port(tmp_path: Path) -> None:
    kustomization = {
        "resources": [os.path.relpath(OVERLAY, tmp_path)],
        "components": [os.path.relpath(MONITORING, tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = program_build(tmp_path)
    (monitor,) = [doc for doc in docs if doc["kind"] == "ServiceMonitor"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [doc for doc in docs if doc["kind"] == "Service"]
    selected = [doc for doc in services if wanted.items() <= doc["metadata"]["labels"].items()]
    assert {doc["metadata"]["name"] for doc in selected} == {f"gantry-{name}" for name in SERVICES}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert all(endpoint["port"] in {port["name"] for port in doc["spec"]["ports"]} for doc in selected)
    assert monitor["metadata"]["namespace"] == "gantry"
    (dashboard,) = [doc for doc in docs if doc["metadata"]["name"] == "gantry-grafana-dashboard"]
    assert json.loads(dashboard["data"]["grafana-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    (scrape,) = [doc for doc in docs if doc["metadata"]["name"] == "gantry-metrics"]
    assert scrape["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
