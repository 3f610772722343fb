"""The Kubernetes cluster driver: server-side apply of the rendered objects, rollout status.

The objects are exactly those of ``manifests.render_objects``, and a service's Ingress that of
``ingress.render_ingress`` (the embedded driver writes the same ones to disk). Apply uses field
manager ``gantry`` without forcing: a field owned by another manager is a conflict, reported as a
failed deployment with the API server's reason. Status follows kubectl's "rollout complete" rule
(observedGeneration, updated/available replicas, ``ProgressDeadlineExceeded`` = failed). The
official client is blocking, so every call runs in a worker thread and the event loop never
waits on the cluster. Credentials come from a kubeconfig or the pod's ServiceAccount, and a
refusal (403) names the namespace, the account and the permission (``kube_access.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from kubernetes.client import VersionApi
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError, ForbiddenError, NotFoundError

from services.deploy.cluster import RolloutState, RolloutStatus, WorkloadSpec
from services.deploy.ingress import IngressSpec, render_ingress
from services.deploy.kube_access import InCluster, forbidden, new_client
from services.deploy.manifests import MANAGED_BY, SHARED_KINDS, render_objects
from shared.naming import suffixed_name, workload_name

FIELD_MANAGER = "gantry"
REQUEST_TIMEOUT = 20.0  # seconds per API call: a stuck call ends instead of outliving its caller


class KubernetesDriver:
    """``source``: a kubeconfig path or ``InCluster()``. Without ``create_namespaces`` the
    Namespace object is left out: the environments' namespaces must exist (and the account needs
    no cluster-wide right)."""

    def __init__(
        self, source: str | InCluster, *, progress_deadline_seconds: int = 600, create_namespaces: bool = True
    ) -> None:
        self.source = source
        self.kubeconfig = source if isinstance(source, str) else None
        self.progress_deadline_seconds = progress_deadline_seconds
        self.create_namespaces = create_namespaces
        self._client: DynamicClient | None = None

    def _dynamic(self) -> DynamicClient:
        if self._client is None:
            self._client = DynamicClient(new_client(self.source))
        return self._client

    async def _call(self, namespace: str, work: Callable[..., Any], *args: Any) -> Any:
        """``work(*args)`` in a worker thread; a 403 becomes a ``ClusterForbidden`` that says why."""
        try:
            return await asyncio.to_thread(work, *args)
        except ForbiddenError as exc:
            account = self.source.account() if isinstance(self.source, InCluster) else ""
            raise forbidden(exc, namespace, account) from None

    async def apply(self, spec: WorkloadSpec) -> RolloutStatus:
        objects = render_objects(spec, progress_deadline_seconds=self.progress_deadline_seconds)
        if not self.create_namespaces:
            objects = [obj for obj in objects if obj["kind"] != "Namespace"]
        try:
            await self._call(spec.namespace, self._apply_all, objects)
        except ConflictError as exc:
            return RolloutStatus("failed", spec.replicas, 0, 0, 0, f"conflict: {_reason(exc)}")
        found = await self.status(spec.project, spec.service, spec.environment, spec.namespace, spec.track)
        return found or RolloutStatus("progressing", spec.replicas, 0, 0, 0, "applied")

    def _apply_all(self, objects: list[dict[str, Any]]) -> None:
        client = self._dynamic()
        for obj in objects:
            resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            namespace = obj["metadata"].get("namespace")
            client.server_side_apply(
                resource,
                body=obj,
                name=obj["metadata"]["name"],
                namespace=namespace,
                field_manager=FIELD_MANAGER,  # no force: another manager's field is a conflict
                _request_timeout=REQUEST_TIMEOUT,
            )

    async def apply_ingress(self, spec: IngressSpec) -> None:
        """Server-side apply of the service's Ingress; deleted once no route leads to the service."""
        ingress = render_ingress(spec)
        if ingress is None:
            await self._call(
                spec.namespace, self._delete_all, [("networking.k8s.io/v1", "Ingress", spec.name)], spec.namespace
            )
        else:
            await self._call(spec.namespace, self._apply_all, [ingress])

    async def reachable(self) -> bool:
        """The API server answers (its /version)."""

        def version() -> bool:
            VersionApi(self._dynamic().client).get_code(_request_timeout=3)
            return True

        try:
            return await asyncio.to_thread(version)
        except Exception:  # unreachable, refused, timed out: all mean "not now"
            return False

    async def status(  # the cluster driver's signature: a namespace is one environment's already
        self,
        project: str,
        service: str,
        environment: str,  # noqa: ARG002
        namespace: str,
        track: str = "stable",
    ) -> RolloutStatus | None:
        name = workload_name(project, service, track)
        deployment = await self._call(namespace, self._read, "apps/v1", "Deployment", name, namespace)
        return None if deployment is None else rollout_status(deployment)

    def _read(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        resource = self._dynamic().resources.get(api_version=api_version, kind=kind)
        try:
            found = resource.get(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT)
            manifest: dict[str, Any] = found.to_dict()
            return manifest
        except NotFoundError:
            return None

    async def delete(  # the cluster driver's signature: a namespace is one environment's already
        self,
        project: str,
        service: str,
        environment: str,  # noqa: ARG002
        namespace: str,
        track: str = "stable",
    ) -> None:
        """Remove one track's objects; the Namespace and the Service the tracks share stay."""
        workload = workload_name(project, service, track)
        owned = [
            ("apps/v1", "Deployment", workload),
            ("v1", "ConfigMap", suffixed_name(workload, "config")),
            ("v1", "Secret", suffixed_name(workload, "secret")),
        ]
        assert not {kind for _v, kind, _n in owned} & set(SHARED_KINDS)
        await self._call(namespace, self._delete_all, owned, namespace)

    def _delete_all(self, owned: list[tuple[str, str, str]], namespace: str) -> None:
        for api_version, kind, name in owned:
            resource = self._dynamic().resources.get(api_version=api_version, kind=kind)
            with contextlib.suppress(NotFoundError):
                resource.delete(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT)

    async def remove(  # the cluster driver's signature: a namespace is one environment's already
        self,
        project: str,
        service: str,
        environment: str,  # noqa: ARG002
        namespace: str,
    ) -> None:
        """Remove the whole service: the objects Gantry names for it (both tracks, the Service, an
        Ingress named after it) and any other object of those kinds labelled ``app=<app>`` by
        Gantry. The Namespace stays; pods go with their Deployment (garbage collection)."""
        app = workload_name(project, service)
        tracks = [workload_name(project, service, track) for track in ("stable", "canary")]
        await self._call(namespace, self._remove_all, app, tracks, namespace)

    def _remove_all(self, app: str, tracks: list[str], namespace: str) -> None:
        named: dict[tuple[str, str], set[str]] = {
            ("apps/v1", "Deployment"): set(tracks),
            ("v1", "ConfigMap"): {suffixed_name(t, "config") for t in tracks},
            ("v1", "Secret"): {suffixed_name(t, "secret") for t in tracks},
            ("v1", "Service"): {app},
            ("networking.k8s.io/v1", "Ingress"): {app},
        }
        selector = ",".join(f"{key}={value}" for key, value in {"app": app, **MANAGED_BY}.items())
        for (api_version, kind), names in named.items():
            resource = self._dynamic().resources.get(api_version=api_version, kind=kind)
            found = resource.get(namespace=namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT)
            labelled = {item.metadata.name for item in found.items}
            for name in sorted(names | labelled):
                with contextlib.suppress(NotFoundError):
                    resource.delete(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT)


def rollout_status(deployment: dict[str, Any]) -> RolloutStatus:
    """kubectl's rollout-complete rule, with the counts the running state shows; a scale-down is
    complete only once the surplus replicas are gone, so "done" means current = desired."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    current = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)

    def answer(state: RolloutState, message: str) -> RolloutStatus:
        return RolloutStatus(state, desired, current, updated, available, message)

    if deployment["metadata"].get("generation", 0) > (status.get("observedGeneration") or 0):
        return answer("progressing", "waiting for the deployment controller to see the change")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return answer("failed", f"progress deadline exceeded: {condition.get('message', '')}".strip())
    if updated < desired:
        return answer("progressing", f"{updated} of {desired} new replicas updated")
    if current > updated:
        return answer("progressing", f"{current - updated} old replicas are pending termination")
    if current > desired:  # stricter than kubectl, which calls a scale-down done at once
        return answer("progressing", f"scaling down: {current} replicas, {desired} desired")
    if available < updated:
        return answer("progressing", f"{available} of {updated} updated replicas are available")
    return answer("succeeded", f"{available} of {desired} replicas available")


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc)
