"""Deploy's composition root: resources, deployments, the worker and the cluster driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.deploy import (
    driver_info,
    environments,
    handlers,
    ingresses,
    known_services,
    org_api,
    requests,
    resources_api,
    rotation,
    worker,
)
from services.deploy.api import router
from services.deploy.cluster import CLUSTER, ClusterDriver
from services.deploy.kube_access import InCluster
from services.deploy.kubernetes import KubernetesDriver
from services.deploy.models import DEPLOY_TABLES, Deployment
from services.deploy.rendered import RenderedManifestsDriver
from services.deploy.sealed import KEYRING
from shared import outbox_api
from shared.bus import Handler, one_at_a_time, with_prefetch
from shared.events import Envelope, Topic
from shared.service import Part, Runtime, create_service_app
from shared.settings import Settings


def build_driver(settings: Settings) -> ClusterDriver:
    """The cluster to deploy to (``GANTRY_KUBERNETES``): a kubeconfig's, the pod's own through its
    ServiceAccount, or none: manifests rendered under ``<home>/manifests``."""
    source = _cluster_source(settings)
    if source is None:
        return RenderedManifestsDriver(settings.home / "manifests")
    return KubernetesDriver(
        source,
        progress_deadline_seconds=settings.progress_deadline_seconds,
        create_namespaces=settings.kubernetes_create_namespaces,
    )


def _cluster_source(settings: Settings) -> str | InCluster | None:
    mode = settings.kubernetes
    if mode == "auto":
        mode = "kubeconfig" if settings.kubeconfig else "in-cluster" if InCluster.detected() else "off"
    if mode == "in-cluster":
        if not InCluster.detected():
            raise RuntimeError(
                "GANTRY_KUBERNETES=in-cluster, but this process has no ServiceAccount token (no "
                "KUBERNETES_SERVICE_HOST or no /var/run/secrets/kubernetes.io/serviceaccount/token): run "
                "it in a pod with automountServiceAccountToken, or set GANTRY_KUBECONFIG"
            )
        return InCluster()
    if mode == "kubeconfig":
        if not settings.kubeconfig or not Path(settings.kubeconfig).is_file():
            raise RuntimeError(
                f"GANTRY_KUBECONFIG (or KUBECONFIG) names {settings.kubeconfig!r}, which is not a file: "
                f"fix the path, or unset it to render manifests under {settings.home / 'manifests'}"
            )
        return settings.kubeconfig
    return None


ROLLOUTS: Part[worker.RolloutWatcher] = Part("rollouts")


@asynccontextmanager
async def _cluster(runtime: Runtime) -> AsyncIterator[None]:
    driver = build_driver(runtime.settings)
    watcher = worker.RolloutWatcher(runtime.uow, driver)
    CLUSTER.provide(runtime, driver)
    runtime.probes["cluster"] = driver.reachable
    runtime.drivers["cluster"] = driver_info.describe(driver)
    ROLLOUTS.provide(runtime, watcher)
    await watcher.resume()
    try:
        yield
    finally:
        await watcher.stop()


REQUESTS: Part[requests.DeployRequests] = Part("deploy-requests")


@asynccontextmanager
async def _requests(runtime: Runtime) -> AsyncIterator[None]:
    """The deploy worker's batches; on SQLite (one instance applies all of a database's requests),
    the lane that applies the requests deploy makes (auto-deploy's, and those made by hand) as the
    transaction that made them commits."""
    uow, ingress = runtime.uow, ingresses.INGRESSES.of(runtime)

    async def sync_ingress(deployed: list[Deployment]) -> None:  # each service's Ingress goes with its deployment
        await ingress.sync_all(ingresses.Where.of(deployment) for deployment in deployed)

    deploy_requests = requests.DeployRequests(
        uow=uow,
        driver=CLUSTER.of(runtime),
        keyring=KEYRING.of(runtime),
        follow=ROLLOUTS.of(runtime).follow,
        recorded=sync_ingress,
    )
    REQUESTS.provide(runtime, deploy_requests)
    if not requests.lane_wanted(runtime.engine):
        yield
        return
    uow.hand_on(Topic.DEPLOY_REQUESTED, deploy_requests.hand_on)
    deploy_requests.start_lane()
    try:
        yield
    finally:
        await deploy_requests.stop_lane()


def _subscriptions(runtime: Runtime) -> dict[str, Handler]:
    uow, ingress, deploy_requests = runtime.uow, ingresses.INGRESSES.of(runtime), REQUESTS.of(runtime)

    async def on_version_released(envelope: Envelope) -> None:
        await handlers.record_released_version(envelope, uow=uow)

    async def on_environment_changed(envelope: Envelope) -> None:
        await environments.on_environment_changed(envelope, uow=uow)
        await ingress.sync_environment(envelope.subject)  # its Ingress class or host may have changed

    async def on_route_changed(envelope: Envelope) -> None:
        await ingresses.on_route_changed(envelope, uow=uow, ingresses=ingress)

    async def on_service_changed(envelope: Envelope) -> None:
        await known_services.on_service_changed(envelope, uow=uow)

    async def on_release_withdrawn(envelope: Envelope) -> None:
        await known_services.on_release_withdrawn(envelope, uow=uow)

    return {
        Topic.SERVICE_CHANGED: on_service_changed,
        Topic.RELEASE_WITHDRAWN: on_release_withdrawn,
        # these act on the cluster after their transaction, reading back what it committed
        Topic.ENVIRONMENT_CHANGED: one_at_a_time(on_environment_changed),
        Topic.VERSION_RELEASED: with_prefetch(handlers.prefetch_released, on_version_released),
        Topic.DEPLOY_REQUESTED: deploy_requests.handler,
        Topic.ROUTE_CHANGED: one_at_a_time(on_route_changed),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "deploy",
        tables=DEPLOY_TABLES,
        routers=[router, org_api.router, resources_api.router, outbox_api.router],
        subscriptions=_subscriptions,
        extensions=[rotation.sealing, _cluster, ingresses.ingress_sync, _requests],
        settings=settings,
    )
