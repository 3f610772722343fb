"""The workload the Kubernetes driver tests deploy (shop/web on staging) and a wait for its rollout."""

from __future__ import annotations

from typing import Any

from services.deploy.cluster import RolloutStatus, WorkloadSpec
from services.deploy.kubernetes import KubernetesDriver
from tests.support import eventually

DATABASE: dict[str, Any] = {"db": {"type": "database", "data": {"url": "postgresql://db"}}}


def web_spec(
    namespace: str,
    version: str = "v1",
    replicas: int = 3,
    track: str = "stable",
    resources: dict[str, Any] | None = None,
) -> WorkloadSpec:
    return WorkloadSpec(
        project="shop",
        service="web",
        environment="staging",
        namespace=namespace,
        version=version,
        image=f"registry.local/shop/web:{version}",
        replicas=replicas,
        track=track,
        resources=DATABASE if resources is None else resources,
    )


async def settled(
    driver: KubernetesDriver, namespace: str, track: str = "stable", timeout: float = 60
) -> RolloutStatus:
    """The rollout's status once it succeeded or failed."""

    async def done() -> RolloutStatus | None:
        status = await driver.status("shop", "web", "staging", namespace, track)
        return status if status is not None and status.state in ("succeeded", "failed") else None

    return await eventually(done, timeout=timeout, interval=0.1)
