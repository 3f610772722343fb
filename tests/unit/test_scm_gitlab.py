"""GitLabScm against a faked GitLab HTTP API.

GitLab cannot be reached from here, so its HTTP API is faked with ``responses`` around a real
``gitlab.Gitlab`` client, as python-gitlab's own unit tests do; the request bodies are checked
against what GitLab's REST API expects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import gitlab
import pytest
import requests
import responses

from services.catalog.scm import (
    GitLabScm,
    GroupNotFound,
    Repository,
    RepositoryExists,
    RepositoryIncomplete,
    RepoSpec,
    ScmError,
    ScmUnavailable,
)

API = "http://gitlab.test/api/v4"
GROUP_URL = f"{API}/groups/acme%2Fshop"
PROJECT = {
    "id": 42,
    "name": "Web Service",
    "path": "web-service",
    "path_with_namespace": "acme/shop/web-service",
    "web_url": "http://gitlab.test/acme/shop/web-service",
    "http_url_to_repo": "http://gitlab.test/acme/shop/web-service.git",
}
SPEC = RepoSpec(
    project="shop",
    group="acme/shop",
    code="web service",
    name="Web Service",
    type="python-fastapi",
    hook_url="https://gantry.example/webhooks/gitlab",
    hook_token=lambda project_id: f"hook-secret-of-{project_id}",
)


@pytest.fixture
def gl() -> gitlab.Gitlab:
    return gitlab.Gitlab("http://gitlab.test", private_token="x", api_version="4")


@pytest.fixture
def scm(gl: gitlab.Gitlab) -> GitLabScm:
    return GitLabScm("http://gitlab.test", "x", gitlab=gl)


@pytest.fixture
def fake() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def add_group(fake: responses.RequestsMock) -> None:
    fake.add(responses.GET, GROUP_URL, json={"id": 7, "full_path": "acme/shop"})


def add_all(fake: responses.RequestsMock) -> None:
    add_group(fake)
    fake.add(responses.POST, f"{API}/projects", json=PROJECT, status=201)
    fake.add(
        responses.POST,
        f"{API}/projects/42/repository/commits",
        json={"id": "a" * 40, "short_id": "aaaaaaaa"},
        status=201,
    )
    fake.add(responses.POST, f"{API}/projects/42/hooks", json={"id": 3, "url": SPEC.hook_url}, status=201)


def body_of(fake: responses.RequestsMock, method: str, url: str) -> dict:
    calls = [c for c in fake.calls if c.request.method == method and c.request.url == url]
    assert len(calls) == 1, f"expected one {method} {url}"
    return json.loads(calls[0].request.body)


def test_creates_project_commits_template_and_registers_hook(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    add_all(fake)
    repo = scm.create_repository(SPEC)

    assert repo.url == PROJECT["http_url_to_repo"]
    assert repo.web_url == PROJECT["web_url"]
    assert repo.path_with_namespace == "acme/shop/web-service"
    assert repo.scm_project_id == "42"

    assert fake.calls[0].request.headers["PRIVATE-TOKEN"] == "x"
    assert body_of(fake, "POST", f"{API}/projects") == {
        "name": "Web Service",
        "path": "web-service",
        "namespace_id": 7,
        "visibility": "private",
        "initialize_with_readme": False,
    }
    commit = body_of(fake, "POST", f"{API}/projects/42/repository/commits")
    assert commit["branch"] == "main"
    assert commit["commit_message"] == "Create web service from the python-fastapi template"
    by_path = {a["file_path"]: a for a in commit["actions"]}
    assert {".gitlab-ci.yml", "Dockerfile", "README.md", "main.py"} <= set(by_path)
    assert all(a["action"] == "create" for a in commit["actions"])
    assert "stages:" in by_path[".gitlab-ci.yml"]["content"]
    assert "# Web Service" in by_path["README.md"]["content"]
    hook = body_of(fake, "POST", f"{API}/projects/42/hooks")
    assert hook == {
        "url": SPEC.hook_url,
        "pipeline_events": True,
        "push_events": False,
        "token": "hook-secret-of-42",
        "enable_ssl_verification": True,
    }


def test_taken_name_is_repository_exists(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    add_group(fake)
    fake.add(
        responses.POST,
        f"{API}/projects",
        status=400,
        json={"message": {"name": ["has already been taken"], "path": ["has already been taken"]}},
    )
    with pytest.raises(RepositoryExists) as info:
        scm.create_repository(SPEC)
    assert "acme/shop/web-service" in info.value.detail
    assert not [c for c in fake.calls if "/hooks" in c.request.url or "/commits" in c.request.url]


def test_rejected_token_is_unavailable(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    fake.add(responses.GET, GROUP_URL, status=401, json={"message": "401 Unauthorized"})
    with pytest.raises(ScmUnavailable, match="rejected the token"):
        scm.create_repository(SPEC)


def test_missing_group_says_what_to_do(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    fake.add(responses.GET, GROUP_URL, status=404, json={"message": "404 Group Not Found"})
    with pytest.raises(ScmError) as info:
        scm.create_repository(SPEC)
    assert isinstance(info.value, GroupNotFound)
    assert "GitLab group acme/shop not found" in info.value.detail
    assert "gitlab_group" in info.value.detail


def test_unreachable_gitlab_is_unavailable(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    fake.add(responses.GET, GROUP_URL, body=requests.ConnectionError("connection refused"))
    with pytest.raises(ScmUnavailable, match="could not be reached"):
        scm.create_repository(SPEC)


def test_server_error_is_unavailable(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    add_group(fake)
    fake.add(responses.POST, f"{API}/projects", status=502, body="Bad Gateway")
    with pytest.raises(ScmUnavailable, match="502"):
        scm.create_repository(SPEC)


def test_other_refusal_is_a_plain_scm_error(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    add_group(fake)
    fake.add(
        responses.POST,
        f"{API}/projects",
        status=400,
        json={"message": {"name": ["can contain only letters, digits, emoji"]}},
    )
    with pytest.raises(ScmError) as info:
        scm.create_repository(SPEC)
    assert type(info.value) is ScmError
    assert "can contain only letters" in info.value.detail


def test_hook_failure_names_step_and_repository(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    add_group(fake)
    fake.add(responses.POST, f"{API}/projects", json=PROJECT, status=201)
    fake.add(responses.POST, f"{API}/projects/42/repository/commits", json={"id": "a"}, status=201)
    fake.add(responses.POST, f"{API}/projects/42/hooks", status=422, json={"message": "Invalid url given"})
    with pytest.raises(RepositoryIncomplete) as info:
        scm.create_repository(SPEC)
    error = info.value
    assert isinstance(error, ScmError)
    assert error.step == "register the pipeline webhook"
    assert error.repository.web_url == PROJECT["web_url"]
    assert "register the pipeline webhook" in error.detail
    assert PROJECT["web_url"] in error.detail and "acme/shop/web-service" in error.detail
    assert "Invalid url given" in error.detail
    assert "hook-secret" not in error.detail


def test_commit_failure_names_step(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    add_group(fake)
    fake.add(responses.POST, f"{API}/projects", json=PROJECT, status=201)
    fake.add(responses.POST, f"{API}/projects/42/repository/commits", status=503, body="unavailable")
    with pytest.raises(RepositoryIncomplete) as info:
        scm.create_repository(SPEC)
    assert info.value.step == "commit the template files"
    assert PROJECT["web_url"] in info.value.detail
    assert not [c for c in fake.calls if "/hooks" in c.request.url]


REPOSITORY = Repository(
    url=PROJECT["http_url_to_repo"],
    web_url=PROJECT["web_url"],
    path_with_namespace="acme/shop/web-service",
    scm_project_id="42",
)


def test_archive_archives_the_project_not_deletes_it(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    fake.add(responses.POST, f"{API}/projects/42/archive", json={**PROJECT, "archived": True}, status=201)

    assert scm.archive(REPOSITORY) is True

    [call] = fake.calls
    assert (call.request.method, call.request.url) == ("POST", f"{API}/projects/42/archive")
    assert call.request.headers["PRIVATE-TOKEN"] == "x"


def test_archive_of_a_project_removed_by_hand_has_nothing_to_do(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    fake.add(responses.POST, f"{API}/projects/42/archive", json={"message": "404 Project Not Found"}, status=404)
    assert scm.archive(REPOSITORY) is False


def test_archive_refused_says_why(scm: GitLabScm, fake: responses.RequestsMock) -> None:
    fake.add(responses.POST, f"{API}/projects/42/archive", json={"message": "403 Forbidden"}, status=403)
    with pytest.raises(ScmUnavailable, match="archive the project acme/shop/web-service.*Maintainer"):
        scm.archive(REPOSITORY)
    fake.replace(responses.POST, f"{API}/projects/42/archive", body=requests.ConnectionError("refused"))
    with pytest.raises(ScmUnavailable, match="could not be reached to archive"):
        scm.archive(REPOSITORY)
