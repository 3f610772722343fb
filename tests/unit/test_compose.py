"""docker-compose.yml, Dockerfile and .dockerignore: the shape of the one-machine container setup.

The compose file is read with PyYAML (anchors and merge keys resolved) and its ``${VAR:-default}``
references replaced by their defaults, as ``docker compose`` does with an empty environment. Each
Gantry service's environment is then loaded into the real ``Settings``, so the ports it listens on
and the addresses it reaches the others at are the ones Gantry computes. Where the compose plugin
is installed, ``docker compose config -q`` validates the file too (it needs no Docker engine).
"""

from __future__ import annotations

import base64
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import SERVICES, Settings
from tests.support import settings_of

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """``${VAR:-default}`` → default, ``${VAR}`` → "" (an empty environment), recursively."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group("default") or "", value)
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    return value


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def test_kafka_postgres_and_the_five_services() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"kafka", "postgres", *SERVICES}


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_built_from_the_one_image(services: dict[str, Any], name: str) -> None:
    service = services[name]
    build = service["build"]
    assert (build if isinstance(build, str) else build["context"]) == "."
    command = service["command"]
    assert (command.split() if isinstance(command, str) else command) == [f"services.{name}"]
    assert service["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_wired_by_environment(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _environment(services[name])
    assert env["GANTRY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["GANTRY_HOST"] == "0.0.0.0"
    database = urlsplit(env["GANTRY_DATABASE_URL"])
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert env["GANTRY_SECRET"] == "", "no placeholder: unset, one secret is generated on the shared volume"

    settings = settings_of(env, monkeypatch)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.database_url is not None and settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.home == Path("/data")
    assert settings.gitlab_url is None or settings.gitlab_url == ""
    # Every other service is reached at its compose name, on the port it listens on itself.
    for other in SERVICES:
        assert settings.service_url(other) == f"http://{other}:{settings_of_port(services, other, monkeypatch)}"


def settings_of_port(services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """The port ``name`` listens on inside its container, from its own environment."""
    with monkeypatch.context() as inner:
        return settings_of(_environment(services[name]), inner).port(name)


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_readiness_healthcheck_on_its_own_port(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = settings_of_port(services, name, monkeypatch)
    test = services[name]["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    assert f"http://127.0.0.1:{port}/readyz" in probe
    assert "urllib" in probe  # python:3.11-slim has no curl


def test_only_the_gateway_publishes_a_port(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"gateway"}
    (mapping,) = services["gateway"]["ports"]
    container_port = str(mapping).split(":")[-1].split("/")[0]
    assert int(container_port) == settings_of_port(services, "gateway", monkeypatch)


def test_data_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    volumes = set(compose["volumes"])
    assert any(v.split(":")[0] in volumes for v in services["postgres"]["volumes"])
    for name in SERVICES:
        env = _environment(services[name])
        mounts = dict(v.split(":")[:2] for v in services[name]["volumes"])
        assert env["GANTRY_HOME"] in mounts.values()
        assert all(source in volumes for source in mounts)
    # One volume for every service's GANTRY_HOME: the installation secret generated there is shared.
    homes = {
        next(v.split(":")[0] for v in services[name]["volumes"] if v.split(":")[1] == "/data") for name in SERVICES
    }
    assert len(homes) == 1


def test_kafka_runs_kraft_single_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    # kafka-storage formats the log with CLUSTER_ID: it must be a base64 UUID (16 bytes).
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])


def test_postgres_matches_the_database_url(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    env = _environment(postgres)
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    url = urlsplit(_environment(services["gateway"])["GANTRY_DATABASE_URL"])
    assert (url.username, url.password, url.path) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        f"/{env['POSTGRES_DB']}",
    )
    assert env["POSTGRES_DB"] == "gantry"


def test_dockerfile_runs_any_service_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM\s+(\$\{PYTHON_IMAGE\}|python:3\.11-slim)", text, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text or "FROM python:3.11-slim" in text
    assert re.search(r"apt-get install .*\bgit\b", text)
    assert re.search(r"pip install (--no-deps )?\.", text)
    assert 'ENTRYPOINT ["python", "-m"]' in text
    assert 'CMD ["services.gateway"]' in text
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    assert exposed == {Settings(port_base=8000).port(name) for name in SERVICES}


def test_dockerignore_keeps_what_pip_install_reads() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", project["project"]["readme"], *packages} <= allowed
    assert not any(line.startswith("!.") for line in lines)


def test_docker_compose_config_accepts_the_file() -> None:
    try:
        version = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        pytest.skip("no docker program here: `docker compose config` cannot validate the file")
    if version.returncode != 0:
        pytest.skip(
            "the docker compose plugin is not installed (`docker compose version` failed: "
            f"{(version.stderr or version.stdout).strip().splitlines()[0]!r})"
        )
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
