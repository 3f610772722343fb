"""What the deploy service asks of a cluster, whichever it is: apply a workload, tell its rollout,
delete one track, remove the whole service. Two drivers answer: ``kubernetes.py`` (a real
cluster) and ``rendered.py`` (manifest files, the embedded default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from fastapi import Depends

from shared.service import Part

if TYPE_CHECKING:  # ingress.py reads deploy's domain, which reads the manifests, which read this
    from services.deploy.ingress import IngressSpec

RolloutState = Literal["rendered", "progressing", "succeeded", "failed", "removed"]


@dataclass(frozen=True)
class WorkloadSpec:
    project: str
    service: str
    environment: str
    namespace: str
    version: str
    image: str
    replicas: int
    track: str = "stable"  # or "canary"
    # resource name -> {"type": "database", "data": {"url": ..., "username": ..., ...}}
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 8080


@dataclass(frozen=True)
class RolloutStatus:
    state: RolloutState
    desired: int
    current: int
    updated: int
    available: int
    message: str


class ClusterDriver(Protocol):
    async def apply(self, spec: WorkloadSpec) -> RolloutStatus: ...

    async def status(
        self, project: str, service: str, environment: str, namespace: str, track: str = "stable"
    ) -> RolloutStatus | None: ...

    async def delete(
        self, project: str, service: str, environment: str, namespace: str, track: str = "stable"
    ) -> None: ...

    async def remove(self, project: str, service: str, environment: str, namespace: str) -> None:
        """Take the service out of the cluster: both tracks' objects, its Service and its Ingress;
        the namespace stays (other services share it). Removing what is already gone is no error."""
        ...

    async def reachable(self) -> bool: ...

    async def apply_ingress(self, spec: IngressSpec) -> None:
        """Put the service's Ingress (``ingress.render_ingress``) in place; remove it when no route is left."""
        ...


CLUSTER: Part[ClusterDriver] = Part("cluster")  # the deploy service's driver, set at start (app.py)
ClusterDep = Annotated[ClusterDriver, Depends(CLUSTER)]
