"""The deploy admin's organization view over HTTP: the services released somewhere, and one of them.

Any signed-in user may ask; each sees the services of the projects they may read (organization
roles: every project).
"""

from __future__ import annotations

from fastapi import APIRouter

from services.deploy import org_view
from services.deploy.cluster import ClusterDep
from services.deploy.org_view import ServiceDetail, ServiceView
from shared.paging import PagesDep, SearchQuery
from shared.service import CurrentUser, RuntimeDep

router = APIRouter(tags=["deploy"])


@router.get("/services", response_model=list[ServiceView])
async def read_services(
    user: CurrentUser,
    runtime: RuntimeDep,
    cluster: ClusterDep,
    pages: PagesDep,
    q: SearchQuery = None,
) -> list[ServiceView]:
    """Every service released to an environment, per environment its released and running
    versions and its last deployment; ``q`` searches the project, the code and the name."""
    return await org_view.list_services(user, q, pages, uow=runtime.uow, driver=cluster)


@router.get("/services/{project}/{service}", response_model=ServiceDetail)
async def read_service(
    project: str, service: str, user: CurrentUser, runtime: RuntimeDep, cluster: ClusterDep
) -> ServiceDetail:
    """One service as in the list, with its recent deployments per environment (newest first)."""
    return await org_view.read_service(user, project, service, uow=runtime.uow, driver=cluster)
