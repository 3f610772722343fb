"""The ``gantry`` command: tokens, and the Pipeline Hook that ``pipeline report`` sends."""

from __future__ import annotations

import argparse

import jwt
import pytest

from gantry.cli import main, pipeline_hook_body
from services.catalog.scm import LocalGitScm, RepoSpec
from services.versioning import domain
from shared import gitlab_hook
from shared.auth import verify_token
from tests.support import SECRET


@pytest.fixture
def installation(monkeypatch, tmp_path):
    monkeypatch.setenv("GANTRY_SECRET", SECRET)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))


def test_token_issue_prints_one_signed_token(installation, capsys):
    assert (
        main(
            [
                "token",
                "issue",
                "--user",
                "ada",
                "--role",
                "shop:project-owner",
                "--role",
                "deploy-admin",
                "--hours",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1, "the token alone on stdout"
    principal = verify_token(SECRET, printed.strip())
    assert principal.user == "ada" and principal.roles == {"shop:project-owner", "deploy-admin"}
    claims = jwt.decode(printed.strip(), SECRET, algorithms=["HS256"], issuer="gantry")
    assert claims["exp"] - claims["iat"] == 2 * 3600


def test_token_issue_refuses_an_unknown_role(installation, capsys):
    assert main(["token", "issue", "--user", "ada", "--role", "admin"]) == 1
    assert "unknown role 'admin'" in capsys.readouterr().err


@pytest.mark.parametrize("hours", ["0", "-3"])
def test_token_issue_refuses_a_token_that_is_already_expired(installation, capsys, hours):
    with pytest.raises(SystemExit) as exited:
        main(["token", "issue", "--user", "ada", "--role", "org-admin", "--hours", hours])
    assert exited.value.code == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "already expired: give 1 or more" in printed.err


def test_a_bad_setting_is_named(monkeypatch, capsys):
    monkeypatch.setenv("GANTRY_KAFKA_BOOTSTRAP", "no-port")
    assert main(["token", "issue", "--user", "a", "--role", "org-admin"]) == 2
    assert "GANTRY_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def report_args(**overrides) -> argparse.Namespace:
    values = {"status": "success", "ref": "main", "sha": None, "tag": False, "pipeline_id": 7}
    return argparse.Namespace(**(values | overrides))


def test_the_hook_body_has_gitlabs_shape_and_the_repository_head(tmp_path):
    repository = LocalGitScm(tmp_path / "repos").create_repository(
        RepoSpec(
            project="shop",
            group="acme",
            code="web",
            name="Web",
            type="go-http",
            hook_url="http://x",
            hook_token=lambda _id: "t",
        )
    )
    service = {
        "id": "s1",
        "code": "web",
        "scm_project_id": repository.scm_project_id,
        "repository_path": repository.path_with_namespace,
        "repository_web_url": repository.web_url,
        "repository_url": repository.url,
    }
    body = pipeline_hook_body(service, report_args())
    attributes = body["object_attributes"]
    assert body["object_kind"] == "pipeline" and body["project"]["path_with_namespace"] == "acme/web"
    assert (attributes["id"], attributes["status"], attributes["tag"]) == (7, "success", False)
    assert len(attributes["sha"]) == 40 and body["commit"]["id"] == attributes["sha"]
    assert attributes["finished_at"].endswith(" UTC")

    tagged = pipeline_hook_body(service, report_args(ref="v1.2.0", tag=True, sha="f" * 40, status="running"))
    assert (tagged["object_attributes"]["ref"], tagged["object_attributes"]["tag"]) == ("v1.2.0", True)
    assert tagged["object_attributes"]["sha"] == "f" * 40 and tagged["object_attributes"]["finished_at"] is None


@pytest.mark.parametrize(("status", "reason"), [("success", None), ("manual", None), ("failed", "'test'")])
def test_the_hook_lists_its_jobs_as_gitlab_does_and_versioning_reads_them(status, reason):
    service = {"scm_project_id": "p1", "code": "web", "repository_path": "acme/web"}
    service |= {"repository_web_url": "file:///r", "repository_url": "file:///r"}
    hook = gitlab_hook.parse_pipeline_hook(pipeline_hook_body(service, report_args(status=status, sha="a" * 40)))
    assert [(job.stage, job.id) for job in hook.jobs] == [("build", 71), ("test", 72), ("package", 73)]
    assert hook.object_attributes.created_at is not None and hook.jobs[0].finished_at is not None
    judged = domain.no_version_reason(hook.jobs)
    assert judged is None if reason is None else reason in judged
