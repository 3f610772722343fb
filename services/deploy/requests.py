"""The deploy worker's batches: ``deploy.requested`` applied to the cluster, then recorded at once.

A batch of requests is applied in three steps. Before its transaction, the requests not yet in the
inbox are applied to the cluster (one service's requests in order, different services' side by
side), outside any transaction, so a slow cluster holds no database lock; the inbox and every
request's resource values are read first, in one session. In the batch's one
transaction, each request's inbox entry, outcome and ``deploy.status`` are recorded (a request
another instance recorded meanwhile is skipped there). After the commit, each service's Ingress is
synced once and progressing rollouts are followed.

On SQLite, the requests deploy makes itself (auto-deploy's, and each action's made by hand) are
also handed to a lane as their transaction commits (``DeployRequests.hand_on``) and applied there
the same way, without waiting for their round trip through the broker; one batch acts on the
cluster at a time, and a request that another unapplied request of its service, made before it,
waits before is left to the topic (ADR 10, revisited).

Applying is idempotent (the same objects again): a crash or a rolled-back transaction between
applying and recording only re-applies. A request applied before its batch's transaction that is
then found poison never reaches the cluster: its data is checked before it is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, resource_values
from services.deploy.cluster import ClusterDriver, RolloutStatus
from services.deploy.models import Deployment, Instance, Track
from services.deploy.revisions import ResourceRevision
from services.deploy.worker import (
    APPLY_TIMEOUT_SECONDS,
    VALUELESS_ACTIONS,
    Follow,
    Values,
    _drive,
    _from_request,
    record_outcome,
)
from shared.batches import FollowUp
from shared.bus import OUTSIDE_WORK_BATCH_MAX, Handler, read_ahead, reading_ahead, with_outside_work, with_prefetch
from shared.consume import apply_handed_on
from shared.errors import PoisonEvent
from shared.events import DeployRequested, Envelope
from shared.logging import get_logger
from shared.outbox import UnitOfWork, applied_among, claim_inbox
from shared.sealing import Keyring

log = get_logger(__name__)
LANE_WAITING_MAX = 1_000
LANE_STOP_SECONDS = 5.0
# The requests not applied yet of some services (the partial index ``ix_deployments_requested``:
# the literal state lets SQLite use it), each with its row's place in the table: on SQLite, where
# the lane runs, a request's rowid follows the order the requests committed in (every writer
# takes the write turn from its first statement to its commit), the order of their outbox rows.
_REQUESTED = select(Deployment.service_id, Deployment.environment, Deployment.id, text("deployments.rowid")).where(
    text("deployments.state = 'requested'"), col(Deployment.service_id).in_(bindparam("services", expanding=True))
)

_DEPLOYMENTS = select(Deployment).where(col(Deployment.id).in_(bindparam("ids", expanding=True)))  # built once

Recorded = Callable[[list[Deployment]], Awaitable[None]]  # after the commit: each service's last recorded deployment


async def _values_read(
    session: AsyncSession,
    request: DeployRequested,
    keyring: Keyring,
    read: Mapping[resource_values.RevisionKey, ResourceRevision] | None = None,
) -> Values:
    """The request's resource values, read now in ``session``, handed over when it is applied; a
    failure to read them is raised then, and fails that request alone (as reading them late did)."""
    if request.action in VALUELESS_ACTIONS:
        return _no_values
    try:
        opened = await resource_values.values_to_apply(
            session, request.environment, request.deployment_id, request.resources, keyring, read
        )
    except Exception as exc:  # noqa: BLE001  # raised when applied: the request fails with its reason
        failure = exc

        async def failed() -> dict[str, dict[str, Any]]:
            raise failure

        return failed

    async def values() -> dict[str, dict[str, Any]]:
        return opened

    return values


async def _no_values() -> dict[str, dict[str, Any]]:
    return {}


class DeployRequests:
    """Applies batches of ``deploy.requested`` (``shared.bus.OutsideWork``); ``record`` is the
    handler that records each one in the batch's transaction (``handler``, as subscribed). One
    batch at a time (``turn``): the topic's, or the lane's (``hand_on``)."""

    def __init__(
        self,
        *,
        uow: UnitOfWork,
        driver: ClusterDriver,
        keyring: Keyring,
        follow: Follow | None = None,
        recorded: Recorded | None = None,
        timeout: float = APPLY_TIMEOUT_SECONDS,
    ) -> None:
        self.uow, self.driver, self.keyring = uow, driver, keyring
        self.follow, self.recorded, self.timeout = follow, recorded, timeout
        self._applied: dict[str, tuple[Track, RolloutStatus]] = {}  # by event id, this batch's
        self._deployments: dict[str, Deployment] = {}
        self._turn = asyncio.Lock()
        self._waiting: list[FollowUp] = []  # handed on, for the lane
        self._arrived = asyncio.Event()
        self._lane: asyncio.Task[None] | None = None

        async def on_deploy_requested(envelope: Envelope) -> Deployment | None:
            return await self.record(envelope)

        self.handler: Handler = with_prefetch(self.prefetch, with_outside_work(self, on_deploy_requested))

    def turn(self) -> asyncio.Lock:
        """Held around each batch, the topic's and the lane's: one acts on the cluster at a time."""
        return self._turn

    async def before(self, envelopes: list[Envelope]) -> None:
        """Apply the batch's new requests to the cluster: per service in order, services side by side."""
        self._applied.clear()
        self._deployments.clear()
        requests: dict[str, tuple[Envelope, DeployRequested]] = {}
        for envelope in envelopes:
            try:
                requests[envelope.id] = (envelope, envelope.payload(DeployRequested))
            except PoisonEvent:
                continue  # refused by the handler, in the transaction: dead-lettered there
        by_service: dict[tuple[str, str], list[tuple[Envelope, DeployRequested, Values]]] = {}
        async with self.uow.sessions() as session:  # one session reads the inbox and every request's values
            applied = await applied_among(session, requests)
            wanted = {request.deployment_id for event_id, (_, request) in requests.items() if event_id not in applied}
            # each request's values start from its deployment: all read in one statement, held meanwhile
            _held = (await session.exec(_DEPLOYMENTS, params={"ids": list(wanted)})).all() if wanted else []
            # and every revision the requests name, in one statement
            read = await resource_values.revisions_of(
                session,
                {
                    (request.environment, name, revision)
                    for event_id, (_, request) in requests.items()
                    if event_id not in applied and request.action not in VALUELESS_ACTIONS
                    for name, revision in request.resources.items()
                    if revision is not None
                },
            )
            for event_id, (envelope, request) in requests.items():
                if event_id in applied:
                    log.info("deploy request already applied", deployment_id=request.deployment_id)
                    continue
                values = await _values_read(session, request, self.keyring, read)
                by_service.setdefault((request.service_id, request.environment), []).append((envelope, request, values))
        await asyncio.gather(*(self._apply_in_order(queue) for queue in by_service.values()))

    async def _apply_in_order(self, queue: list[tuple[Envelope, DeployRequested, Values]]) -> None:
        for envelope, request, values in queue:
            self._applied[envelope.id] = await self._apply(request, values)

    async def _apply(self, request: DeployRequested, values: Values) -> tuple[Track, RolloutStatus]:
        track = domain.track_of(request.action, request.strategy)
        return track, await _drive(self.driver, request, track, self.timeout, values)

    async def record(self, envelope: Envelope) -> Deployment | None:
        """In the batch's transaction: the request's outcome and ``deploy.status``; None for one
        already recorded. A request ``before`` did not apply (it failed to read the inbox) is
        applied here, its values read in the batch's session."""
        request = envelope.payload(DeployRequested)  # data that does not fit: PoisonEvent
        async with self.uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return None
            # it sees what the batch wrote, and takes no second connection while the batch holds the lock
            track, status = self._applied.get(envelope.id) or await self._apply(
                request, await _values_read(session, request, self.keyring)
            )
            deployment = await session.get(Deployment, request.deployment_id)
            if deployment is None:  # requested by another deploy database: record it from the event
                deployment = _from_request(request, track, envelope.correlation_id)
            await record_outcome(session, deployment, status, cause=envelope)
        self._deployments[envelope.id] = deployment
        log.info(
            "deploy request applied",
            deployment_id=deployment.id,
            action=deployment.action,
            track=track,
            state=status.state,
            message=status.message,
        )
        return deployment

    # What ``record`` looks up by key for a batch of requests (each deployment, and the instances of
    # each service's environment): two statements for the batch (``shared.bus.with_prefetch``).
    prefetch = staticmethod(
        reading_ahead(
            read_ahead(Deployment, DeployRequested, id="deployment_id"),
            read_ahead(Instance, DeployRequested, service_id="service_id", environment="environment"),
        )
    )

    async def after(self, envelopes: list[Envelope]) -> None:
        """Follow the progressing rollouts the batch recorded; sync each service's Ingress once."""
        recorded = [self._deployments[e.id] for e in envelopes if e.id in self._deployments]
        self._applied.clear()
        self._deployments.clear()
        for deployment in recorded:
            if deployment.state == "progressing" and self.follow is not None:
                self.follow(deployment.id)
        if self.recorded is not None:
            last_of_each = {(d.service_id, d.environment): d for d in recorded}
            if last_of_each:
                await self.recorded(list(last_of_each.values()))

    # The lane: the requests deploy makes itself (auto-deploy's, as a batch of releases commits,
    # and each action's made by hand) are applied at once, not after their round trip through the
    # broker (ADR 10, revisited).

    def hand_on(self, handed: list[FollowUp]) -> None:
        """Take requests this service emitted and committed (``UnitOfWork.hand_on``) for the lane;
        beyond ``LANE_WAITING_MAX`` waiting, their copies from the topic apply them."""
        room = LANE_WAITING_MAX - len(self._waiting)
        if room < len(handed):
            log.warning("deploy request lane full; the topic applies the rest", left=len(handed) - max(room, 0))
            self.uow.wake_relay()  # for those: the lane wakes it for the rest once it dealt with them
        self._waiting.extend(handed[: max(room, 0)])
        self._arrived.set()

    def start_lane(self) -> None:
        if self._lane is None:
            self._lane = asyncio.create_task(self._run_lane(), name="deploy-request-lane")

    async def stop_lane(self, timeout: float = LANE_STOP_SECONDS) -> None:
        """Let the lane finish the batch it is applying (within ``timeout``); what still waits is
        left to its copy from the topic."""
        lane, self._lane = self._lane, None
        self._waiting.clear()
        self.uow.wake_relay_if_owed()  # what waited goes out now, and its copies from the topic apply it
        if lane is None:
            return
        self._arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(lane), timeout)
        lane.cancel()
        await asyncio.gather(lane, return_exceptions=True)

    async def _run_lane(self) -> None:
        while self._lane is not None:
            await self._arrived.wait()
            self._arrived.clear()
            while self._waiting and self._lane is not None:
                handed = self._waiting[:OUTSIDE_WORK_BATCH_MAX]
                del self._waiting[: len(handed)]
                try:
                    await self.apply_handed(handed)
                except Exception:  # noqa: BLE001  # their copies from the topic apply them
                    log.exception("deploy request lane failed; the topic applies its requests", requests=len(handed))
                finally:
                    # the requests, and what applying them emitted, go out in one relay cycle:
                    # woken by the commit of what it applied, or here when it applied nothing
                    self.uow.wake_relay_if_owed()

    async def apply_handed(self, handed: list[FollowUp]) -> list[Envelope]:
        """The lane's step: apply requests handed on, in a batch of their own, in this service's
        turn; those another request waits before are left to the topic (``_clear_to_apply``).
        The requests applied (or found applied) are returned."""
        async with self.turn():
            clear = await self._clear_to_apply(handed)
            return await apply_handed_on(clear, self.handler, self.uow, self) if clear else []

    async def _clear_to_apply(self, handed: list[FollowUp]) -> list[FollowUp]:
        """The handed-on requests no other unapplied request of their service and environment,
        made before them, waits before (in the topic, requested by hand say): those wait for their
        copies from the topic, in the topic's order. One made after them does not hold them back:
        applying then recording holds ``turn``, so it cannot be applied before them."""
        ours: dict[str, tuple[str, str]] = {}
        for done in handed:
            try:
                request = done.envelope.payload(DeployRequested)
            except PoisonEvent:
                continue  # its copy from the topic is refused and dead-lettered
            ours[request.deployment_id] = (request.service_id, request.environment)
        if not ours:
            return []
        async with self.uow.sessions() as session:
            rows = await session.exec(_REQUESTED, params={"services": sorted({s for s, _ in ours.values()})})
            placed: dict[str, int] = {}
            first_other: dict[tuple[str, str], int] = {}  # the first unapplied request not handed here
            for service_id, environment, id_, place in rows.all():
                if id_ in ours:
                    placed[id_] = place
                else:
                    key = (service_id, environment)
                    first_other[key] = min(place, first_other.get(key, place))
        clear = []
        for done in handed:
            deployment_id = done.envelope.data.get("deployment_id")
            if (where := ours.get(deployment_id)) is None:
                continue
            other = first_other.get(where)
            # not requested any more (applied from the topic meanwhile): the inbox tells, in the batch
            if other is None or deployment_id not in placed or placed[deployment_id] < other:
                clear.append(done)
        if len(clear) < len(handed):
            log.info("deploy requests left to the topic", requests=len(handed) - len(clear))
        return clear


def lane_wanted(engine: AsyncEngine) -> bool:
    """Whether deploy applies its own requests as they commit (the lane): on SQLite, where one
    instance applies every request of its database (``turn`` keeps them in order there). On
    PostgreSQL, instances share the topic's partitions; a request handed on in one could overtake
    a later one another applies, so every request goes round through the topic."""
    return engine.dialect.name == "sqlite"


async def apply_deploy_request(
    envelope: Envelope,
    *,
    uow: UnitOfWork,
    driver: ClusterDriver,
    keyring: Keyring,
    follow: Follow | None = None,
    timeout: float = APPLY_TIMEOUT_SECONDS,
) -> Deployment | None:
    """One request as a batch of one, in a transaction of its own; the deployment as recorded, or
    None for a redelivery (skipped before the cluster is touched)."""
    requests = DeployRequests(uow=uow, driver=driver, keyring=keyring, follow=follow, timeout=timeout)
    await requests.before([envelope])
    deployment = await requests.record(envelope)
    await requests.after([envelope] if deployment is not None else [])
    return deployment
