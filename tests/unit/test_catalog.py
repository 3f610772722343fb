"""Catalog: the guide's rules for services ("Create a service"), with a fake repository host."""
from __future__ import annotations

import json

import pytest

from services.catalog import domain, handlers
from services.catalog.models import Project, ProjectCreate, Service, ServiceCreate
from services.catalog.scm import (
    GroupNotFound,
    Repository,
    RepositoryExists,
    RepoSpec,
    ScmUnavailable,
)
from shared.auth import webhook_secret
from shared.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from tests.support import SECRET
from tests.unit.conftest import outbox

HOOK_URL = "http://127.0.0.1:8000/webhooks/gitlab"


class FakeScm:
    """Stands in for GitLab / local git: records what it was asked to create."""

    def __init__(self, error: Exception | None = None) -> None:
        self.specs: list[RepoSpec] = []
        self.error = error

    def create_repository(self, spec: RepoSpec) -> Repository:
        self.specs.append(spec)
        if self.error:
            raise self.error
        path = f"{spec.group}/{spec.code.replace(' ', '-')}"
        return Repository(url=f"file:///repos/{path}.git", web_url=f"file:///repos/{path}.git",
                          path_with_namespace=path, scm_project_id=path)


@pytest.fixture
async def uow(make_uow):
    uow = await make_uow("catalog", [Project, Service])
    await handlers.create_project(ProjectCreate(code="shop", name="Shop", gitlab_group="acme"), by="root", uow=uow)
    return uow


async def create(uow, scm, code="web", group="com.acme", type="python-fastapi", name="Web"):
    return await handlers.create_service(
        "shop", ServiceCreate(code=code, name=name, group=group, type=type), by="alice",
        correlation_id="corr-1", uow=uow, scm=scm, secret=SECRET, hook_url=HOOK_URL)


@pytest.mark.parametrize("code", ["webservice0310", "web service", "web_api.v2", "a-b"])
def test_service_code_accepts_lowercase_letters_digits_and_separators(code):
    # guide: "Service code may contain only letters, digits, _, ., - and spaces, and no upper-case letters"
    assert domain.validate_service_code(code) == code


@pytest.mark.parametrize("code", ["Web", "web/api", "web@1", "", "   ", "服务", "...", "- -", "_"])
def test_service_code_refuses_anything_else(code):
    with pytest.raises(InvalidInput):
        domain.validate_service_code(code)


@pytest.mark.parametrize("group", ["com.acme", "acme-shop", "a_b.c"])
def test_service_group_accepted(group):
    assert domain.validate_service_group(group) == group


@pytest.mark.parametrize("group, why", [
    ("com.阿里", "Chinese"), ("Com.acme", "upper-case"), (".acme", "start or end"), ("acme.", "start or end")])
def test_service_group_rules(group, why):
    # guide: "Service group may contain no Chinese characters and no upper-case letters,
    # and may not start or end with '.'"
    with pytest.raises(InvalidInput, match=why):
        domain.validate_service_group(group)


async def test_create_service_makes_repository_and_announces_it(uow):
    scm = FakeScm()
    service = await create(uow, scm, code="web service")
    assert service.repository_url.endswith("acme/web-service.git")
    assert service.slug == "web-service"
    spec = scm.specs[0]
    assert (spec.group, spec.type, spec.hook_url) == ("acme", "python-fastapi", HOOK_URL)
    assert spec.hook_token == webhook_secret(SECRET, service.id)
    [row] = await outbox(uow, "service.created")
    event = json.loads(row.payload)
    assert row.key == service.id and event["correlation_id"] == "corr-1"
    assert event["data"]["repository_path"] == "acme/web-service"
    assert event["subject"] == "shop/web service"


async def test_service_code_unique_per_project(uow):
    await create(uow, FakeScm())
    scm = FakeScm()
    with pytest.raises(Conflict, match="already used"):
        await create(uow, scm)
    assert scm.specs == [], "no repository is made for a refused service"


async def test_derived_name_collision_is_a_clear_conflict(uow):
    await create(uow, FakeScm(), code="web-api")
    with pytest.raises(Conflict, match="derives the name 'web-api'"):
        await create(uow, FakeScm(), code="web api")


async def test_kubernetes_names_are_unique_across_projects(uow):
    # "shop" + "a-b" and "shop-a" + "b" would both be the workload "shop-a-b" in one namespace
    await handlers.create_project(ProjectCreate(code="shop-a", name="Shop A", gitlab_group="acme-a"), by="root", uow=uow)
    await create(uow, FakeScm(), code="a-b")
    with pytest.raises(Conflict, match="Kubernetes name 'shop-a-b'.*project 'shop'"):
        await handlers.create_service("shop-a", ServiceCreate(code="b", name="B", group="g", type="go-http"),
                                      by="a", correlation_id="c", uow=uow, scm=FakeScm(), secret=SECRET,
                                      hook_url=HOOK_URL)


async def test_codes_that_would_clash_with_canary_names_are_refused(uow):
    with pytest.raises(Conflict, match="keeps for canary"):
        await create(uow, FakeScm(), code="web-canary")
    await create(uow, FakeScm(), code="web")
    check = await handlers.check_code("shop", "web canary", uow=uow)
    assert check.available is False


async def test_repository_errors_map_to_actionable_answers(uow):
    with pytest.raises(Conflict):
        await create(uow, FakeScm(RepositoryExists("acme/web is taken")))
    with pytest.raises(InvalidInput, match="group"):
        await create(uow, FakeScm(GroupNotFound("GitLab group acme not found")))
    with pytest.raises(UpstreamUnavailable):
        await create(uow, FakeScm(ScmUnavailable("GitLab rejected the token")))
    assert await handlers.list_services("shop", uow=uow) == []
    assert await outbox(uow) == [], "nothing half-written when the repository host fails"


async def test_unknown_type_and_project(uow):
    with pytest.raises(InvalidInput, match="unknown service type"):
        await create(uow, FakeScm(), type="cobol")
    with pytest.raises(NotFound, match="create it"):
        await handlers.create_service("nope", ServiceCreate(code="x", name="X", group="g", type="python-fastapi"),
                                      by="a", correlation_id="c", uow=uow, scm=FakeScm(), secret=SECRET,
                                      hook_url=HOOK_URL)


async def test_check_code(uow):
    await create(uow, FakeScm())
    assert (await handlers.check_code("shop", "web", uow=uow)).available is False
    assert (await handlers.check_code("shop", "api", uow=uow)).available is True
    bad = await handlers.check_code("shop", "Web", uow=uow)
    assert bad.available is False and "upper-case" in bad.reason
