"""LocalGitScm with the real git program: bare repositories made from the service templates."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.catalog.scm import (
    GitLabScm,
    InvalidRepositorySpec,
    LocalGitScm,
    Repository,
    RepositoryExists,
    RepoSpec,
    ScmError,
    build_scm,
)
from services.catalog.service_types import SERVICE_TYPES, UnknownServiceType, template_files

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git program")

CONTEXT = {"service_code": "web", "service_name": "Web Shop", "project": "shop", "group": "acme/shop"}


def spec(**overrides: str) -> RepoSpec:
    values = {
        "project": "shop",
        "group": "acme/shop",
        "code": "web service",
        "name": "Web Service",
        "type": "python-fastapi",
        "hook_url": "http://127.0.0.1:8000/webhooks/gitlab",
    }
    values.update(overrides)
    return RepoSpec(**values, hook_token=lambda project_id: f"s3cret-of-{project_id}")


def clone(url: str, into: Path) -> Path:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "clone", "-q", url, str(into)], check=True, env=env, capture_output=True)
    return into


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_service_types_are_the_catalog_offer() -> None:
    assert set(SERVICE_TYPES) == {"python-fastapi", "java-spring", "go-http", "static-web"}
    for code, service_type in SERVICE_TYPES.items():
        assert service_type.code == code
        assert service_type.name and service_type.description
        assert (service_type.template_dir / "type.yaml").is_file()


@pytest.mark.parametrize("type_code", sorted(SERVICE_TYPES))
def test_every_template_is_complete(type_code: str) -> None:
    files = template_files(type_code, CONTEXT)
    assert {".gitlab-ci.yml", "Dockerfile", "README.md"} <= set(files)
    assert "type.yaml" not in files
    assert len(files) >= 4  # plus at least one source file
    ci = yaml.safe_load(files[".gitlab-ci.yml"])
    assert ci["stages"] == ["build", "test", "package"]
    package = "\n".join(ci["package"]["script"])
    assert "docker push" in package
    assert "${CI_COMMIT_TAG:-$CI_COMMIT_SHORT_SHA}" in package
    assert {job["stage"] for name, job in ci.items() if isinstance(job, dict) and "stage" in job} == {
        "build",
        "test",
        "package",
    }
    assert "# Web Shop" in files["README.md"] and "`shop`" in files["README.md"]
    assert all("{{" not in content for content in files.values())


def test_python_template_runs(tmp_path: Path) -> None:
    source = tmp_path / "main.py"
    source.write_text(template_files("python-fastapi", CONTEXT)["main.py"])
    module_spec = importlib.util.spec_from_file_location("template_main", source)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    assert {"/healthz", "/"} <= {route.path for route in module.app.routes}
    assert module.healthz() == {"status": "ok"}
    assert module.index() == {"service": "web"}


def test_template_files_errors() -> None:
    with pytest.raises(UnknownServiceType, match="choose one of"):
        template_files("cobol", CONTEXT)
    with pytest.raises(ValueError, match="service_name"):
        template_files("go-http", {k: v for k, v in CONTEXT.items() if k != "service_name"})


def test_creates_a_bare_repository_from_the_template(tmp_path: Path) -> None:
    scm = LocalGitScm(tmp_path / "repos")
    repo = scm.create_repository(spec())

    bare = tmp_path / "repos" / "acme" / "shop" / "web-service.git"
    assert git_out(bare, "rev-parse", "--is-bare-repository") == "true"
    assert repo.path_with_namespace == "acme/shop/web-service"
    assert repo.scm_project_id.startswith("local-") and repo.path_with_namespace == "acme/shop/web-service"
    assert repo.url == bare.resolve().as_uri() and repo.url.startswith("file://")
    assert repo.web_url == repo.url

    work = clone(repo.url, tmp_path / "clone")
    assert (work / ".gitlab-ci.yml").is_file()
    assert (work / "Dockerfile").is_file() and (work / "main.py").is_file()
    readme = (work / "README.md").read_text()
    assert "# Web Service" in readme and "`web service`" in readme and "acme/shop" in readme
    assert "{{" not in readme
    assert git_out(work, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git_out(work, "log", "-1", "--format=%an <%ae>|%s") == (
        "Gantry <gantry@localhost>|Create web service from the python-fastapi template"
    )


def test_hook_json_records_the_webhook(tmp_path: Path) -> None:
    LocalGitScm(tmp_path).create_repository(spec(type="go-http"))
    hook_file = tmp_path / "acme" / "shop" / "web-service.git" / "hook.json"
    hook = json.loads(hook_file.read_text())
    assert hook["url"] == "http://127.0.0.1:8000/webhooks/gitlab"
    assert hook["project_id"].startswith("local-")
    assert hook["token"] == f"s3cret-of-{hook['project_id']}", "derived from the repository's scm_project_id"
    assert hook["pipeline_events"] is True and hook["push_events"] is False
    assert hook_file.stat().st_mode & 0o077 == 0  # the secret is readable by its owner only


def test_second_create_is_refused(tmp_path: Path) -> None:
    scm = LocalGitScm(tmp_path)
    scm.create_repository(spec())
    with pytest.raises(RepositoryExists) as info:
        scm.create_repository(spec(name="Another name"))
    assert "acme/shop/web-service" in info.value.detail
    assert isinstance(info.value, ScmError)
    # nothing half-made is left beside the repository
    assert sorted(p.name for p in (tmp_path / "acme" / "shop").iterdir()) == ["web-service.git"]


def test_codes_with_the_same_path_collide(tmp_path: Path) -> None:
    scm = LocalGitScm(tmp_path)
    scm.create_repository(spec(code="web service"))
    with pytest.raises(RepositoryExists):
        scm.create_repository(spec(code="web-service"))


def test_does_not_depend_on_global_git_config(tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "gitconfig"
    broken.write_text("[commit]\n\tgpgsign = true\n[init]\n\tdefaultBranch = trunk\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(broken))
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = LocalGitScm(tmp_path / "repos").create_repository(spec())
    assert repo.path_with_namespace == "acme/shop/web-service"


@pytest.mark.parametrize("overrides", [{"group": "../etc"}, {"code": "..."}, {"type": "cobol"}])
def test_invalid_specs(tmp_path: Path, overrides: dict[str, str]) -> None:
    with pytest.raises(InvalidRepositorySpec):
        LocalGitScm(tmp_path).create_repository(spec(**overrides))
    assert not any(tmp_path.iterdir())


def test_build_scm(tmp_path: Path) -> None:
    local = build_scm(None, None, tmp_path)
    assert isinstance(local, LocalGitScm) and local.root == tmp_path / "repos"
    assert isinstance(build_scm("http://gitlab.test", "x", tmp_path), GitLabScm)
    assert isinstance(build_scm("http://gitlab.test", None, tmp_path), LocalGitScm)


def test_an_archived_repository_is_kept_and_refuses_pushes(tmp_path: Path) -> None:
    scm = LocalGitScm(tmp_path / "repos")
    repo = scm.create_repository(spec(code="web.v2"))
    work = clone(repo.url, tmp_path / "clone")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    git = ["git", "-C", str(work), "-c", "user.name=Ada", "-c", "user.email=ada@example.org"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "before"], check=True, env=env)
    subprocess.run([*git, "push", "-q", "origin", "main"], check=True, env=env, capture_output=True)

    assert scm.archive(repo) is True
    assert scm.archive(repo) is True, "archiving again changes nothing"

    bare = tmp_path / "repos" / "acme" / "shop" / "web.v2.git"
    assert json.loads((bare / "archived.json").read_text())["project_id"] == repo.scm_project_id
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "after"], check=True, env=env)
    refused = subprocess.run([*git, "push", "origin", "main"], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "is archived" in refused.stderr
    assert git_out(bare, "log", "-1", "--format=%s") == "before", "the history is kept, nothing after"
    assert clone(repo.url, tmp_path / "again").is_dir(), "an archived repository can still be read"


def test_archive_of_a_repository_removed_by_hand_has_nothing_to_do(tmp_path: Path) -> None:
    scm = LocalGitScm(tmp_path / "repos")
    repo = scm.create_repository(spec())
    shutil.rmtree(tmp_path / "repos" / "acme" / "shop" / "web-service.git")
    assert scm.archive(repo) is False
    outside = Repository(url="", web_url="", path_with_namespace="../../etc/x", scm_project_id="local-x")
    with pytest.raises(InvalidRepositorySpec, match="not a repository under"):
        scm.archive(outside)
