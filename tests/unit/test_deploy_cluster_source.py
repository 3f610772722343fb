"""Which cluster the deploy service talks to (GANTRY_KUBERNETES), decided at start."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.deploy.app import build_driver
from services.deploy.kube_access import InCluster
from services.deploy.kubernetes import KubernetesDriver
from services.deploy.rendered import RenderedManifestsDriver
from shared.settings import Settings


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}))
    return str(path)


def test_the_setting_picks_the_cluster(tmp_path: Path, kubeconfig: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    auto = build_driver(Settings(home=tmp_path, secret="s", kubeconfig=kubeconfig, kubernetes_create_namespaces=False))
    assert isinstance(auto, KubernetesDriver) and auto.source == kubeconfig and auto.create_namespaces is False
    off = build_driver(Settings(home=tmp_path, secret="s", kubeconfig=kubeconfig, kubernetes="off"))
    assert isinstance(off, RenderedManifestsDriver), "off renders manifests even with a kubeconfig"
    assert isinstance(build_driver(Settings(home=tmp_path, secret="s")), RenderedManifestsDriver), "no pod, no file"
    with pytest.raises(RuntimeError, match="GANTRY_KUBECONFIG .* not a file"):
        build_driver(Settings(home=tmp_path, secret="s", kubernetes="kubeconfig"))
    with pytest.raises(RuntimeError, match="GANTRY_KUBERNETES=in-cluster, but this process has no ServiceAccount"):
        build_driver(Settings(home=tmp_path, secret="s", kubeconfig=kubeconfig, kubernetes="in-cluster"))


def test_a_bad_setting_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="kubernetes"):
        Settings(secret="s", kubernetes="cluster")  # type: ignore[arg-type]


def test_the_account_is_read_from_the_token(tmp_path: Path) -> None:
    claims = {"sub": "system:serviceaccount:gantry:gantry-deploy", "aud": ["https://kubernetes.default.svc"]}
    (tmp_path / "bad").write_text("not-a-jwt")
    assert InCluster(token_file=str(tmp_path / "bad")).account() == "", "an unreadable token names no account"
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    (tmp_path / "token").write_text(f"header.{encoded}.signature\n")
    assert InCluster(token_file=str(tmp_path / "token")).account() == claims["sub"]
    assert InCluster(token_file=str(tmp_path / "missing")).account() == ""


@pytest.mark.parametrize("service", ["deploy", "gateway"])
def test_a_service_started_with_a_placeholder_stops_at_once(tmp_path: Path, service: str) -> None:
    placeholder = "change-me-to-the-output-of-openssl-rand-hex-32"  # deploy/overlays/example/secrets.env
    env = {key: value for key, value in os.environ.items() if not key.startswith("GANTRY_")}
    env |= {"GANTRY_SECRET": placeholder, "GANTRY_HOME": str(tmp_path)}
    started = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert "GANTRY_SECRET holds a placeholder from the examples" in started.stderr
    assert placeholder not in started.stderr, "the value itself is never echoed"
