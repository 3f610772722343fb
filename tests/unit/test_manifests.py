from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import yaml

from services.deploy.cluster import RolloutStatus, WorkloadSpec
from services.deploy.manifests import (
    HEADER,
    SHARED_KINDS,
    env_name,
    is_secret_key,
    render_objects,
)
from services.deploy.rendered import RenderedManifestsDriver
from shared.naming import DNS1123_LABEL

DB = {
    "orders-db": {
        "type": "database",
        "data": {"url": "postgresql://app:pw@db:5432/orders", "username": "app", "password": "pw", "pool_size": 5},
    }
}


def make_spec(**overrides) -> WorkloadSpec:
    values = {
        "project": "shop",
        "service": "web-service",
        "environment": "dev",
        "namespace": "shop-dev",
        "version": "2024.5.1-120000-main",
        "image": "registry.test/shop/web-service:abc1234",
        "replicas": 2,
        "resources": DB,
    }
    values.update(overrides)
    return WorkloadSpec(**values)


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


def test_objects_kinds_and_names() -> None:
    objects = render_objects(make_spec())
    assert [o["kind"] for o in objects] == ["Namespace", "ConfigMap", "Secret", "Deployment", "Service"]
    kinds = by_kind(objects)
    assert kinds["Namespace"]["metadata"]["name"] == "shop-dev"
    assert kinds["ConfigMap"]["metadata"]["name"] == "shop-web-service-config"
    assert kinds["Secret"]["metadata"]["name"] == "shop-web-service-secret"
    assert kinds["Deployment"]["metadata"]["name"] == "shop-web-service"
    assert kinds["Service"]["metadata"]["name"] == "shop-web-service"
    for obj in objects[1:]:
        assert obj["metadata"]["namespace"] == "shop-dev"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gantry"


def test_deployment_labels_selector_and_pod() -> None:
    deployment = by_kind(render_objects(make_spec()))["Deployment"]
    labels = deployment["metadata"]["labels"]
    assert labels["app"] == "shop-web-service"
    assert labels["track"] == "stable"
    assert labels["version"] == "2024.5.1-120000-main"
    spec = deployment["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "shop-web-service", "track": "stable"}}
    assert spec["replicas"] == 2
    assert spec["progressDeadlineSeconds"] == 600
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["version"] == "2024.5.1-120000-main"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == "registry.test/shop/web-service:abc1234"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "shop-web-service-config"}},
        {"secretRef": {"name": "shop-web-service-secret"}},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_progress_deadline_parameter() -> None:
    deployment = by_kind(render_objects(make_spec(), progress_deadline_seconds=120))["Deployment"]
    assert deployment["spec"]["progressDeadlineSeconds"] == 120


def test_service_selects_only_app() -> None:
    service = by_kind(render_objects(make_spec()))["Service"]
    assert service["spec"]["selector"] == {"app": "shop-web-service"}
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert "track" not in service["metadata"]["labels"]


def test_canary_track() -> None:
    stable = by_kind(render_objects(make_spec()))
    canary = by_kind(render_objects(make_spec(track="canary", version="v2", replicas=1)))
    deployment = canary["Deployment"]
    assert deployment["metadata"]["name"] == "shop-web-service-canary"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "shop-web-service", "track": "canary"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["app"] == "shop-web-service"
    assert canary["ConfigMap"]["metadata"]["name"] == "shop-web-service-canary-config"
    # the objects both tracks share are rendered identically, so applying one never flaps them
    for kind in SHARED_KINDS:
        assert canary[kind] == stable[kind]


def test_resource_data_split_between_configmap_and_secret() -> None:
    kinds = by_kind(render_objects(make_spec()))
    assert kinds["ConfigMap"]["data"] == {"ORDERS_DB_USERNAME": "app", "ORDERS_DB_POOL_SIZE": "5"}
    secret = {k: base64.b64decode(v).decode() for k, v in kinds["Secret"]["data"].items()}
    assert secret == {"ORDERS_DB_URL": "postgresql://app:pw@db:5432/orders", "ORDERS_DB_PASSWORD": "pw"}
    assert kinds["Secret"]["type"] == "Opaque"


def test_secret_key_rules() -> None:
    assert is_secret_key("database", "url")
    assert not is_secret_key("http", "url")
    assert is_secret_key("redis", "auth_token") and is_secret_key("x", "API_KEY")
    assert not is_secret_key("cache", "host")
    assert env_name("orders-db", "url") == "ORDERS_DB_URL"
    assert env_name("1db", "x") == "R_1DB_X"


def test_no_resources_gives_empty_config_and_secret() -> None:
    kinds = by_kind(render_objects(make_spec(resources={})))
    assert kinds["ConfigMap"]["data"] == {} and kinds["Secret"]["data"] == {}


def test_env_name_clash_is_refused() -> None:
    resources = {"a-b": {"type": "x", "data": {"c": "1"}}, "a": {"type": "x", "data": {"b-c": "2"}}}
    with pytest.raises(ValueError, match="A_B_C"):
        render_objects(make_spec(resources=resources))


@pytest.mark.parametrize("replicas", [0, -1])
def test_replicas_below_one_refused(replicas: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        render_objects(make_spec(replicas=replicas))


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"namespace": "Shop Dev"}, "not a DNS-1123 label"),
        ({"port": 0}, "between 1 and 65535"),
        ({"image": " "}, "image must not be empty"),
    ],
)
def test_other_invalid_specs(overrides: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        render_objects(make_spec(**overrides))


def test_long_names_stay_within_63() -> None:
    spec = make_spec(
        project="a-really-long-project-name-for-testing",
        track="canary",
        service="and-an-even-longer-service-name-that-never-ends",
        version="v" + "1." * 50 + "0+build",
    )
    for obj in render_objects(spec):
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and DNS1123_LABEL.match(name), name
        for value in obj["metadata"].get("labels", {}).values():
            assert len(value) <= 63
    deployment = by_kind(render_objects(spec))["Deployment"]
    assert deployment["metadata"]["name"].endswith("-canary")


async def test_driver_writes_multi_doc_yaml(tmp_path: Path) -> None:
    driver = RenderedManifestsDriver(tmp_path)
    status = await driver.apply(make_spec())
    path = tmp_path / "dev" / "shop-dev" / "shop-web-service.yaml"
    assert status == RolloutStatus(
        state="rendered", desired=2, current=0, updated=0, available=0, message=f"manifests written to {path}"
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER)
    assert "&id" not in text  # no YAML anchors: every object stands alone
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["Namespace", "ConfigMap", "Secret", "Deployment", "Service"]
    assert by_kind(docs)["Deployment"]["metadata"]["labels"]["version"] == "2024.5.1-120000-main"
    assert docs == render_objects(make_spec())
    assert path.stat().st_mode & 0o077 == 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


async def test_apply_twice_gives_identical_bytes(tmp_path: Path) -> None:
    driver = RenderedManifestsDriver(tmp_path)
    await driver.apply(make_spec())
    path = tmp_path / "dev" / "shop-dev" / "shop-web-service.yaml"
    first = path.read_bytes()
    await driver.apply(make_spec())
    assert path.read_bytes() == first
    await driver.apply(make_spec(version="v2"))
    assert path.read_bytes() != first


async def test_status_reads_back_and_delete_removes(tmp_path: Path) -> None:
    driver = RenderedManifestsDriver(tmp_path)
    assert await driver.status("shop", "web-service", "dev", "shop-dev") is None
    await driver.apply(make_spec(replicas=3))
    await driver.apply(make_spec(track="canary", replicas=1))
    status = await driver.status("shop", "web-service", "dev", "shop-dev")
    assert status is not None and status.state == "rendered" and status.desired == 3
    canary = await driver.status("shop", "web-service", "dev", "shop-dev", "canary")
    assert canary is not None and canary.desired == 1

    await driver.delete("shop", "web-service", "dev", "shop-dev", "canary")
    assert await driver.status("shop", "web-service", "dev", "shop-dev", "canary") is None
    assert await driver.status("shop", "web-service", "dev", "shop-dev") is not None
    await driver.delete("shop", "web-service", "dev", "shop-dev", "canary")  # idempotent


async def test_unreadable_file_reports_failed(tmp_path: Path) -> None:
    driver = RenderedManifestsDriver(tmp_path)
    path = driver.path("shop", "web-service", "dev", "shop-dev")
    path.parent.mkdir(parents=True)
    path.write_text("{not yaml: [")
    status = await driver.status("shop", "web-service", "dev", "shop-dev")
    assert status is not None and status.state == "failed"


async def test_concurrent_applies_stay_consistent(tmp_path: Path) -> None:
    driver = RenderedManifestsDriver(tmp_path)
    await asyncio.gather(*(driver.apply(make_spec(replicas=n)) for n in range(1, 6)))
    status = await driver.status("shop", "web-service", "dev", "shop-dev")
    assert status is not None and 1 <= status.desired <= 5


@pytest.mark.parametrize("environment", ["..", "a/b", ""])
def test_environment_must_be_a_safe_folder(tmp_path: Path, environment: str) -> None:
    with pytest.raises(ValueError, match="folder"):
        RenderedManifestsDriver(tmp_path).path("shop", "web", environment, "ns")


async def test_the_manifests_folder_is_reachable_when_writable(tmp_path: Path) -> None:
    assert await RenderedManifestsDriver(tmp_path / "manifests").reachable() is True
