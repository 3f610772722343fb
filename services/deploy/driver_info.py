"""Which cluster driver deploy runs with, and where it deploys: told by ``/readyz``, so a reader
knows whether "rendered" means manifests on disk or a rollout on a real cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.deploy.cluster import ClusterDriver
from services.deploy.kube_access import InCluster
from services.deploy.kubernetes import KubernetesDriver
from services.deploy.rendered import RenderedManifestsDriver


def describe(driver: ClusterDriver) -> dict[str, str]:
    if isinstance(driver, RenderedManifestsDriver):
        return {"driver": "rendered", "manifests": str(driver.root)}
    if isinstance(driver, KubernetesDriver) and isinstance(driver.source, InCluster):
        return {"driver": "kubernetes", "credentials": "in-cluster", "account": driver.source.account()}
    if isinstance(driver, KubernetesDriver) and driver.kubeconfig:
        return {"driver": "kubernetes", "kubeconfig": driver.kubeconfig, **_current_cluster(driver.kubeconfig)}
    return {"driver": type(driver).__name__}


def _current_cluster(kubeconfig: str) -> dict[str, str]:
    """The kubeconfig's current context, its cluster and server (nothing when it cannot be read)."""
    try:
        config: dict[str, Any] = yaml.safe_load(Path(kubeconfig).read_text(encoding="utf-8")) or {}
        context_name = config["current-context"]
        context = next(c["context"] for c in config.get("contexts", []) if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config.get("clusters", []) if c["name"] == context["cluster"])
        return {"context": context_name, "cluster": context["cluster"], "server": cluster["server"]}
    except (OSError, yaml.YAMLError, KeyError, StopIteration, TypeError):
        return {}
