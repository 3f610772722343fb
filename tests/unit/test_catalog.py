"""Catalog: the guide's rules for services ("Create a service"), with a fake repository host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.catalog import domain, handlers
from services.catalog.models import Project, ProjectCreate, Service, ServiceCreate
from services.catalog.running import ServiceRun
from services.catalog.scm import (
    GroupNotFound,
    LocalGitScm,
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


class RecordingScm(LocalGitScm):
    """The real local-git repository host, remembering what it was asked to create."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.specs: list[RepoSpec] = []

    def create_repository(self, spec: RepoSpec) -> Repository:
        self.specs.append(spec)
        return super().create_repository(spec)


class FailingGitLab:
    """Stands in for GitLab's refusals (GitLab cannot be reached from here; the GitLab adapter's
    own mapping of its HTTP answers to these errors is tested in test_scm_gitlab.py)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def create_repository(self, spec: RepoSpec) -> Repository:
        raise self.error


@pytest.fixture
def scm(tmp_path: Path) -> RecordingScm:
    return RecordingScm(tmp_path / "repos")


@pytest.fixture
async def uow(make_uow):
    uow = await make_uow("catalog", [Project, Service, ServiceRun])
    await handlers.create_project(ProjectCreate(code="shop", name="Shop", gitlab_group="acme"), by="root", uow=uow)
    return uow


async def create(uow, scm, code="web", group="com.acme", type="python-fastapi", name="Web"):
    return await handlers.create_service(
        "shop",
        ServiceCreate(code=code, name=name, group=group, type=type),
        by="alice",
        correlation_id="corr-1",
        uow=uow,
        scm=scm,
        secret=SECRET,
        hook_url=HOOK_URL,
    )


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


@pytest.mark.parametrize(
    ("group", "why"),
    [("com.阿里", "Chinese"), ("Com.acme", "upper-case"), (".acme", "start or end"), ("acme.", "start or end")],
)
def test_service_group_rules(group, why):
    # guide: "Service group may contain no Chinese characters and no upper-case letters,
    # and may not start or end with '.'"
    with pytest.raises(InvalidInput, match=why):
        domain.validate_service_group(group)


async def test_create_service_makes_repository_and_announces_it(uow, scm):
    service = await create(uow, scm, code="web service")
    assert service.repository_url.endswith("acme/web-service.git")
    assert (scm.root / "acme" / "web-service.git" / "HEAD").is_file(), "a real bare repository"
    assert service.slug == "web-service"
    spec = scm.specs[0]
    assert (spec.group, spec.type, spec.hook_url) == ("acme", "python-fastapi", HOOK_URL)
    assert spec.hook_token(service.scm_project_id) == webhook_secret(SECRET, service.scm_project_id)
    [row] = await outbox(uow, "service.created")
    event = json.loads(row.payload)
    assert row.key == service.id and event["correlation_id"] == "corr-1"
    assert event["data"]["repository_path"] == "acme/web-service"
    assert event["subject"] == "shop/web service"


async def test_service_code_unique_per_project(uow, scm):
    await create(uow, scm)
    scm.specs.clear()
    with pytest.raises(Conflict, match="already used"):
        await create(uow, scm)
    assert scm.specs == [], "no repository is made for a refused service"


async def test_derived_name_collision_is_a_clear_conflict(uow, scm):
    await create(uow, scm, code="web-api")
    with pytest.raises(Conflict, match="derives the name 'web-api'"):
        await create(uow, scm, code="web api")


async def test_kubernetes_names_are_unique_across_projects(uow, scm):
    # "shop" + "a-b" and "shop-a" + "b" would both be the workload "shop-a-b" in one namespace
    await handlers.create_project(
        ProjectCreate(code="shop-a", name="Shop A", gitlab_group="acme-a"), by="root", uow=uow
    )
    await create(uow, scm, code="a-b")
    with pytest.raises(Conflict, match="Kubernetes name 'shop-a-b'.*project 'shop'"):
        await handlers.create_service(
            "shop-a",
            ServiceCreate(code="b", name="B", group="g", type="go-http"),
            by="a",
            correlation_id="c",
            uow=uow,
            scm=scm,
            secret=SECRET,
            hook_url=HOOK_URL,
        )


async def test_codes_that_would_clash_with_canary_names_are_refused(uow, scm):
    with pytest.raises(Conflict, match="keeps for canary"):
        await create(uow, scm, code="web-canary")
    await create(uow, scm, code="web")
    check = await handlers.check_code("shop", "web canary", uow=uow)
    assert check.available is False


async def test_repository_errors_map_to_actionable_answers(uow):
    with pytest.raises(Conflict):
        await create(uow, FailingGitLab(RepositoryExists("acme/web is taken")))
    with pytest.raises(InvalidInput, match="group"):
        await create(uow, FailingGitLab(GroupNotFound("GitLab group acme not found")))
    with pytest.raises(UpstreamUnavailable):
        await create(uow, FailingGitLab(ScmUnavailable("GitLab rejected the token")))
    assert await handlers.list_services("shop", uow=uow) == []
    assert await outbox(uow) == [], "nothing half-written when the repository host fails"


async def test_unknown_type_and_project(uow, scm):
    with pytest.raises(InvalidInput, match="unknown service type"):
        await create(uow, scm, type="cobol")
    with pytest.raises(NotFound, match="create it"):
        await handlers.create_service(
            "nope",
            ServiceCreate(code="x", name="X", group="g", type="python-fastapi"),
            by="a",
            correlation_id="c",
            uow=uow,
            scm=scm,
            secret=SECRET,
            hook_url=HOOK_URL,
        )


async def test_check_code(uow, scm):
    await create(uow, scm)
    assert (await handlers.check_code("shop", "web", uow=uow)).available is False
    assert (await handlers.check_code("shop", "api", uow=uow)).available is True
    bad = await handlers.check_code("shop", "Web", uow=uow)
    assert bad.available is False and "upper-case" in bad.reason


def test_a_change_of_name_and_switch_announces_each_change_in_order():
    both = domain.service_changes("Web", True, new_name=" Web Shop ", new_enabled=False)
    assert [(c.change, c.name, c.enabled) for c in both] == [
        ("updated", "Web Shop", True),
        ("disabled", "Web Shop", False),
    ]
    assert [c.change for c in domain.service_changes("Web", False, new_name=None, new_enabled=True)] == ["enabled"]


def test_what_is_already_so_changes_nothing():
    assert domain.service_changes("Web", False, new_name="Web", new_enabled=False) == []
    with pytest.raises(InvalidInput, match="nothing to change"):
        domain.service_changes("Web", True, new_name=None, new_enabled=None)
    with pytest.raises(InvalidInput, match="service name is required"):
        domain.service_changes("Web", True, new_name="  ", new_enabled=None)


def test_a_service_is_deleted_only_once_disabled():
    domain.require_disabled("shop", "web", enabled=False)
    with pytest.raises(Conflict, match=r"disable it first.*\{\"enabled\": false\}"):
        domain.require_disabled("shop", "web", enabled=True)


def test_a_service_is_deleted_only_when_it_runs_nowhere():
    domain.require_running_nowhere("shop", "web", [])
    with pytest.raises(Conflict, match="still runs in production, staging: undeploy it there first"):
        domain.require_running_nowhere("shop", "web", ["staging", "production"])


def test_a_project_is_deleted_only_when_empty():
    domain.require_empty_project("shop", 0)
    with pytest.raises(Conflict, match="still has 1 service: they must be deleted first"):
        domain.require_empty_project("shop", 1)
    with pytest.raises(Conflict, match="still has 3 services"):
        domain.require_empty_project("shop", 3)
