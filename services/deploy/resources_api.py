"""Deploy's HTTP API for resources (organization level, role deploy-admin): create, list, read
with its revisions, update (a new revision) and delete (refused while something runs with it)."""

from __future__ import annotations

from fastapi import APIRouter

from services.deploy import resources, views
from services.deploy.models import ResourceCreate, ResourcePublic, ResourceUpdate
from services.deploy.resources import ResourceDetail
from services.deploy.sealed import KeyringDep
from shared.paging import PagesDep, SearchQuery, matches
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["deploy"])
RESOURCES = "/environments/{environment}/resources"
RESOURCE = f"{RESOURCES}/{{name}}"
DEPLOY_ADMIN = "deploy-admin"


@router.post(RESOURCES, status_code=201, response_model=ResourcePublic)
async def create_resource(
    environment: str,
    data: ResourceCreate,
    user: CurrentUser,
    runtime: RuntimeDep,
    keyring: KeyringDep,
    cid: CorrelationId,
) -> ResourcePublic:
    """Define a resource (database, cache, queue, config…) for deployments in the environment;
    its secret values are sealed, and shown masked."""
    user.require_org(DEPLOY_ADMIN)
    made = await resources.create_resource(
        environment, data, by=user.user, uow=runtime.uow, keyring=keyring, correlation_id=cid
    )
    return resources.public(made)


@router.get(RESOURCES, response_model=list[ResourcePublic])
async def read_resources(
    environment: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    pages: PagesDep,
    q: SearchQuery = None,
) -> list[ResourcePublic]:
    """The resources defined in an environment, by name (``q``: in their name or type)."""
    user.require_org(DEPLOY_ADMIN)
    defined = await views.list_resources(environment, uow=runtime.uow)
    found = [resources.public(r) for r in defined if matches(q, r.name, r.type)]
    return pages.serve(found, lambda r: (r.name,))


@router.get(RESOURCE, response_model=ResourceDetail)
async def read_resource(environment: str, name: str, user: CurrentUser, runtime: RuntimeDep) -> ResourceDetail:
    """A resource as it is now, with every revision it has had (oldest first)."""
    user.require_org(DEPLOY_ADMIN)
    return await resources.read_resource(environment, name, uow=runtime.uow)


@router.put(RESOURCE, response_model=ResourcePublic)
async def update_resource(
    environment: str,
    name: str,
    data: ResourceUpdate,
    user: CurrentUser,
    runtime: RuntimeDep,
    keyring: KeyringDep,
    cid: CorrelationId,
) -> ResourcePublic:
    """Replace a resource's type and data: a new revision. What runs keeps the revision it was
    deployed with until it is deployed again; the same content again makes no revision. A secret
    value set now is sent anew, or named in ``keep`` or ``remove``."""
    user.require_org(DEPLOY_ADMIN)
    changed = await resources.update_resource(
        environment, name, data, by=user.user, uow=runtime.uow, keyring=keyring, correlation_id=cid
    )
    return resources.public(changed)


@router.delete(RESOURCE, status_code=204)
async def delete_resource(
    environment: str, name: str, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId
) -> None:
    """Delete a resource; 409 naming the services while something runs with it."""
    user.require_org(DEPLOY_ADMIN)
    await resources.delete_resource(environment, name, uow=runtime.uow, correlation_id=cid)
