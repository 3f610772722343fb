"""The state board's own reads at the gateway: who the viewer is and may act as, and the chains.

The board's matrix and service pages read deploy's and versioning's APIs through the gateway with
the viewer's token; what only the gateway knows (the bus's recent chains and dead letters) is here.
The page's script and style are served next to it, from files, with no external asset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from services.gateway import chains
from services.gateway.chains import Chain
from services.gateway.events_stream import EventsDep
from shared.auth import PROJECT_ROLES
from shared.service import CurrentUser

router = APIRouter(tags=["board"])
assets_router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
ASSETS = {"board.js": "text/javascript", "board.css": "text/css"}


class Viewer(BaseModel):
    user: str
    roles: list[str]
    reads_every_project: bool  # org-admin, deploy-admin
    projects: list[str]  # the projects a project role names
    may_deploy: bool  # deploy, rollback, scale, promote or abort a canary
    may_decide_dead_letters: bool  # retry or discard a dead letter


@router.get("/me", response_model=Viewer)
async def read_viewer(user: CurrentUser) -> Viewer:
    """The token's user and roles, and what the board may offer them."""
    projects = sorted({role.partition(":")[0] for role in user.roles if role.partition(":")[2] in PROJECT_ROLES})
    return Viewer(
        user=user.user,
        roles=sorted(user.roles),
        reads_every_project=user.reads_every_project(),
        projects=projects,
        may_deploy=user.is_org_admin() or "deploy-admin" in user.roles,
        may_decide_dead_letters=user.is_org_admin(),
    )


@router.get("/chains", response_model=list[Chain])
async def read_chains(
    user: CurrentUser,
    stream: EventsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="how many chains at most")] = 20,
) -> list[Chain]:
    """The latest chains, newest first: the events of each correlation id, hop by hop with their times
    (organization roles: every chain, with the events' data; project roles: their projects' chains)."""
    return chains.chains(stream.history(), user, limit)


@assets_router.get("/board.js")
async def board_script() -> Response:
    return _asset("board.js")


@assets_router.get("/board.css")
async def board_style() -> Response:
    return _asset("board.css")


def _asset(name: str) -> Response:
    body = (HERE / name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
