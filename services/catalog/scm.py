"""Source-code management: a service's repository, made from the template of its service type.

Two adapters behind one port (``Scm``): ``GitLabScm`` (python-gitlab) and ``LocalGitScm`` (bare git
repositories on this machine, the embedded default). ``build_scm`` picks one from the settings.
``create_repository`` and ``archive`` are blocking (network or ``git`` processes): run them in a
thread (``await asyncio.to_thread(scm.create_repository, spec)``).
The templates of the service types: ``services/catalog/service_types.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol, TypeVar

import gitlab as _gitlab
import requests
from fastapi import Depends

from services.catalog.service_types import template_files
from shared.naming import gitlab_path
from shared.service import Part

GIT_AUTHOR = ("Gantry", "gantry@localhost")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RepoSpec:
    project: str
    group: str  # the GitLab group's full path (the project's gitlab_group), e.g. "acme/shop"
    code: str
    name: str
    type: str
    hook_url: str
    hook_token: Callable[[str], str]  # the hook's secret, from the repository's scm_project_id


@dataclass(frozen=True)
class Repository:
    url: str  # clone URL
    web_url: str
    path_with_namespace: str
    scm_project_id: str


class ScmError(Exception):
    """A repository could not be created; ``detail`` says what happened and what to do."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RepositoryExists(ScmError):
    """The repository's name or path is already taken (→ 409)."""


class ScmUnavailable(ScmError):
    """The SCM cannot be used now: token rejected, server down or unreachable (→ 502/503)."""


class InvalidRepositorySpec(ScmError, ValueError):
    """The spec cannot name a repository (bad group path, code or service type) (→ 422)."""


class GroupNotFound(ScmError):
    """The GitLab group does not exist or the token cannot see it."""


class RepositoryIncomplete(ScmError):
    """The repository was created but a later step failed; it is left for an operator."""

    def __init__(self, detail: str, *, step: str, repository: Repository) -> None:
        super().__init__(detail)
        self.step = step
        self.repository = repository


class Scm(Protocol):
    def create_repository(self, spec: RepoSpec) -> Repository:
        """Create the repository from the type's template (blocking)."""
        ...

    def archive(self, repository: Repository) -> bool:
        """Make the repository read-only, keeping it and its history (blocking); False when there
        is no repository there any more (removed by hand), so nothing was left to archive."""
        ...


def _prepare(spec: RepoSpec) -> tuple[str, dict[str, str]]:
    """The repository path inside the group and the template files, or InvalidRepositorySpec."""
    try:
        path = gitlab_path(spec.group, spec.code)
        context = {"service_code": spec.code, "service_name": spec.name, "project": spec.project, "group": spec.group}
        return path, template_files(spec.type, context)
    except ValueError as exc:
        raise InvalidRepositorySpec(str(exc)) from exc


def _commit_message(spec: RepoSpec) -> str:
    return f"Create {spec.code} from the {spec.type} template"


class LocalGitScm:
    """Bare git repositories under ``root/<group>/<path>.git`` (needs the ``git`` program)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def create_repository(self, spec: RepoSpec) -> Repository:
        path, files = _prepare(spec)
        full_path = f"{spec.group}/{path}"
        # GitLab numbers its projects; a local repository gets an id no other installation shares,
        # since hooks are keyed and their tokens derived by it.
        project_id = f"local-{uuid.uuid4().hex}"
        target = self.root.joinpath(*spec.group.split("/"), f"{path}.git")
        if target.exists():
            raise RepositoryExists(_exists_detail(full_path, str(target)))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".creating-") as tmp:
            work, bare = Path(tmp) / "work", Path(tmp) / "bare.git"
            for rel, content in files.items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                (work / rel).write_text(content, encoding="utf-8")
            _git(Path(tmp), "init", "-q", "-b", "main", str(work))
            _git(work, "add", "-A")
            _git(work, "commit", "-q", "-m", _commit_message(spec))
            _git(Path(tmp), "init", "-q", "--bare", "-b", "main", str(bare))
            _git(work, "push", "-q", str(bare), "main")
            _write_hook(bare / "hook.json", spec, full_path, project_id)
            try:
                os.rename(bare, target)  # atomic: a repository appears whole or not at all
            except OSError as exc:
                raise RepositoryExists(_exists_detail(full_path, str(target))) from exc
        url = target.resolve().as_uri()
        return Repository(url=url, web_url=url, path_with_namespace=full_path, scm_project_id=project_id)

    def archive(self, repository: Repository) -> bool:
        """Mark the bare repository archived where it is: an ``archived.json`` note and a
        ``pre-receive`` hook that refuses every push, as GitLab refuses pushes to an archived
        project. Its path stays taken, as an archived GitLab project's does."""
        *group, path = repository.path_with_namespace.split("/")
        target = self.root.joinpath(*group, f"{path}.git")
        if not target.resolve().is_relative_to(self.root.resolve()):
            raise InvalidRepositorySpec(f"{repository.path_with_namespace} is not a repository under {self.root}")
        if not (target / "HEAD").is_file():
            return False
        hook = target / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(ARCHIVED_HOOK.format(path=repository.path_with_namespace), encoding="utf-8")
        hook.chmod(0o755)
        note = {"archived": True, "archived_at": datetime.now(UTC).isoformat(), "project_id": repository.scm_project_id}
        (target / "archived.json").write_text(json.dumps(note, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return True


ARCHIVED_HOOK = """#!/bin/sh
echo "the repository {path} is archived (its service was deleted): it is read-only" >&2
exit 1
"""


def _exists_detail(full_path: str, where: str) -> str:
    return (
        f"a repository {full_path} already exists ({where}): choose another service code or "
        "name, or remove the existing repository first"
    )


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME=GIT_AUTHOR[0],
        GIT_AUTHOR_EMAIL=GIT_AUTHOR[1],
        GIT_COMMITTER_NAME=GIT_AUTHOR[0],
        GIT_COMMITTER_EMAIL=GIT_AUTHOR[1],
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def _git(cwd: Path, *args: str) -> None:
    command = ["git", "-c", "commit.gpgsign=false", *args]
    try:
        subprocess.run(command, cwd=cwd, env=_git_env(), check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise ScmUnavailable("the git program is not installed: install git (>= 2.28)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ScmUnavailable(f"git {args[0]} did not finish within 60 s") from exc
    except subprocess.CalledProcessError as exc:
        raise ScmError(f"git {args[0]} failed: {exc.stderr.strip() or exc}") from exc


def _write_hook(path: Path, spec: RepoSpec, full_path: str, project_id: str) -> None:
    """Record the pipeline webhook (with its per-repository secret: owner-only file)."""
    hook = {
        "url": spec.hook_url,
        "token": spec.hook_token(project_id),
        "pipeline_events": True,
        "push_events": False,
        "project": spec.project,
        "service": spec.code,
        "path_with_namespace": full_path,
        "project_id": project_id,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(hook, handle, indent=2, sort_keys=True)
        handle.write("\n")


class GitLabScm:
    """Repositories in a GitLab instance, through python-gitlab (blocking HTTP calls)."""

    def __init__(self, url: str, token: str, *, gitlab: _gitlab.Gitlab | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._gl = gitlab or _gitlab.Gitlab(self.url, private_token=token, timeout=timeout)

    def create_repository(self, spec: RepoSpec) -> Repository:
        path, files = _prepare(spec)
        full_path = f"{spec.group}/{path}"
        group = self._call(
            f"find the GitLab group {spec.group}",
            lambda: self._gl.groups.get(spec.group),
            not_found=f"GitLab group {spec.group} not found: create it or fix the project's "
            "gitlab_group (the token must also be able to see it)",
        )
        body = {
            "name": spec.name,
            "path": path,
            "namespace_id": group.id,
            "visibility": "private",
            "initialize_with_readme": False,
        }
        project = self._call(
            f"create the project {full_path}",
            lambda: self._gl.projects.create(body),
            taken=f"GitLab ({self.url}) already has a project at {full_path} or named "
            f"{spec.name!r} in {spec.group}: choose another service code or name, or remove "
            "the existing project first",
        )
        repo = Repository(
            url=project.http_url_to_repo,
            web_url=project.web_url,
            path_with_namespace=project.path_with_namespace,
            scm_project_id=str(project.id),
        )
        commit = {
            "branch": "main",
            "commit_message": _commit_message(spec),
            "actions": [{"action": "create", "file_path": p, "content": c} for p, c in files.items()],
        }
        self._finish("commit the template files", repo, lambda: project.commits.create(commit))
        hook = {
            "url": spec.hook_url,
            "pipeline_events": True,
            "push_events": False,
            "token": spec.hook_token(repo.scm_project_id),
            "enable_ssl_verification": True,
        }
        self._finish("register the pipeline webhook", repo, lambda: project.hooks.create(hook))
        return repo

    def archive(self, repository: Repository) -> bool:
        """Archive the GitLab project (``POST /projects/:id/archive``): read-only, kept with its history."""
        project = self._gl.projects.get(repository.scm_project_id, lazy=True)

        def step() -> bool:
            try:
                project.archive()
            except _gitlab.GitlabError as exc:
                if exc.response_code == 404:
                    return False
                raise
            return True

        return self._call(f"archive the project {repository.path_with_namespace}", step)

    def _call(self, what: str, step: Callable[[], _T], *, not_found: str | None = None, taken: str | None = None) -> _T:
        try:
            return step()
        except (_gitlab.GitlabError, requests.RequestException) as exc:
            code = getattr(exc, "response_code", None)
            message = str(getattr(exc, "error_message", exc))
            if not_found and code == 404:
                raise GroupNotFound(not_found) from exc
            if taken and code in (400, 409) and "has already been taken" in message:
                raise RepositoryExists(taken) from exc
            raise self._translate(exc, what) from exc

    def _finish(self, what: str, repo: Repository, step: Callable[[], object]) -> None:
        """A step after the project exists: a failure names the step and the repository."""
        try:
            self._call(what, step)
        except ScmError as exc:
            raise RepositoryIncomplete(
                f"the repository {repo.path_with_namespace} was created ({repo.web_url}) but a "
                f"later step failed: {exc.detail} — finish this step in GitLab, or delete the "
                "repository and create the service again",
                step=what,
                repository=repo,
            ) from exc

    def _translate(self, exc: Exception, what: str) -> ScmError:
        if isinstance(exc, _gitlab.GitlabAuthenticationError):
            return ScmUnavailable(
                f"GitLab rejected the token (401) when trying to {what}: set "
                "GANTRY_GITLAB_TOKEN to a valid token with the api scope"
            )
        if isinstance(exc, requests.RequestException):
            return ScmUnavailable(f"GitLab at {self.url} could not be reached to {what}: {exc}")
        code = getattr(exc, "response_code", None)
        message = getattr(exc, "error_message", str(exc))
        if code == 403:
            return ScmUnavailable(
                f"GitLab refused to {what} (403 {message}): the token needs the api scope and "
                "the Maintainer role (or higher) in the group"
            )
        if code is None or code >= 500 or code == 429:
            return ScmUnavailable(f"GitLab could not {what} (answered {code}): {message}")
        return ScmError(f"GitLab could not {what} (answered {code}): {message}")


def build_scm(gitlab_url: str | None, gitlab_token: str | None, home: Path) -> Scm:
    """GitLab when both ``gitlab_url`` and ``gitlab_token`` are set, else ``home/repos``."""
    if gitlab_url and gitlab_token:
        return GitLabScm(gitlab_url, gitlab_token)
    return LocalGitScm(Path(home) / "repos")


SCM: Part[Scm] = Part("scm")  # the service's repository host, set at start (services/catalog/app.py)
ScmDep = Annotated[Scm, Depends(SCM)]
