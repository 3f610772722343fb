"""The client commands' own logic: the kept login, tables and JSON/YAML, the paging and error
mapping of the gateway's answers, server-sent events, ``wait``'s ends, and the secret lookup
of ``token issue``. (Against a running Gantry: tests/e2e/test_cli.py.)"""

from __future__ import annotations

import argparse
import io
import json
import stat

import httpx
import pytest
import yaml

from gantry.cli import main
from gantry.client import actions, config, errors, events, listing, output
from gantry.client.api import Api, check, detail
from gantry.client.errors import CliError
from tests.support import SECRET

DEPLOYMENT = {
    "id": "d1",
    "project": "shop",
    "service": "web",
    "environment": "staging",
    "version": "1.0.2",
    "action": "deploy",
    "track": "stable",
    "replicas": 2,
    "state": "requested",
    "desired": None,
    "available": None,
    "message": "",
}


# --- the kept login ------------------------------------------------------------------------------


def test_the_config_file_is_found_as_xdg_says(tmp_path):
    assert config.config_path({"GANTRY_CONFIG": str(tmp_path / "c.json")}) == tmp_path / "c.json"
    assert config.config_path({"XDG_CONFIG_HOME": "/x"}).as_posix() == "/x/gantry/config.json"
    assert config.config_path({}).parts[-3:] == (".config", "gantry", "config.json")


def test_a_login_is_kept_for_its_owner_only_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr("os.umask", lambda _mask: 0)  # even so, the modes below
    path = tmp_path / "xdg" / "gantry" / "config.json"
    config.save(config.Login("http://g:8000", "t1"), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.load(path) == config.Login("http://g:8000", "t1")
    config.save(config.Login("http://h:9000/", "t2"), path)  # a new login replaces the old one
    assert config.require(path) == config.Login("http://h:9000", "t2")
    assert [p.name for p in path.parent.iterdir()] == ["config.json"], "no temporary file left"
    assert config.remove(path) and not config.remove(path)


def test_no_login_or_a_damaged_one_says_which_file_and_what_to_do(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(CliError) as missing:
        config.require(path)
    assert missing.value.code == errors.NOT_LOGGED_IN and str(path) in missing.value.message
    assert "gantry login --gateway URL --token TOKEN" in missing.value.message
    path.write_text("{not json")
    with pytest.raises(CliError) as damaged:
        config.load(path)
    assert damaged.value.code == errors.NOT_LOGGED_IN and str(path) in damaged.value.message


def test_logout_forgets_the_login(tmp_path, monkeypatch, capsys):
    path = tmp_path / "config.json"
    monkeypatch.setenv("GANTRY_CONFIG", str(path))
    config.save(config.Login("http://g", "t"), path)
    assert main(["logout"]) == 0 and not path.exists()
    assert main(["logout"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"logged out: removed {path}", f"not logged in (no {path})"]


# --- output ----------------------------------------------------------------------------------------


def test_a_table_aligns_its_columns_under_upper_case_headers():
    rows = [{"code": "qa", "name": "QA", "tier": "test"}, {"code": "production", "name": "Prod", "tier": None}]
    text = output.table(rows, listing.COLUMNS["environments"][:3])
    assert text.splitlines() == [
        "CODE         NAME   TIER",
        "qa           QA     test",
        "production   Prod   -",
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        ([], "-"),
        (True, "yes"),
        (["a", "b"], "a,b"),
        ({"db": 2}, "db=2"),
        ("2024-05-01T12:00:03.123456Z", "2024-05-01 12:00:03"),
        ("two\nlines", "two lines"),
        ("x" * 80, "x" * 59 + "…"),
    ],
)
def test_a_cell_is_one_short_line(value, shown):
    assert output.cell(value) == shown


def test_json_and_yaml_give_the_apis_items_unchanged():
    items = [{"id": "d1", "resource_revisions": {"db": 2}, "finished_at": None}]
    assert json.loads(output.dump(items, "json")) == items
    assert yaml.safe_load(output.dump(items, "yaml")) == items


def test_the_organization_view_is_one_row_per_service_and_environment():
    view = [
        {
            "project": "shop",
            "service": "web",
            "state": "enabled",
            "environments": [
                {"environment": "qa", "stable": {"version": "1.0.1", "state": "rendered", "replicas": 2}},
                {"environment": "prod", "stable": None, "canary": None, "auto_deploy": True},
            ],
        },
        {"project": "shop", "service": "api", "state": "disabled", "environments": []},
    ]
    rows = listing.service_rows(view)
    lines = output.table(rows, listing.SERVICE_COLUMNS).splitlines()
    assert lines[0].split() == [
        "PROJECT", "SERVICE", "ENVIRONMENT", "STABLE", "CANARY", "REPLICAS", "AVAILABLE", "STATE", "AUTO-DEPLOY",
        "LAST-DEPLOYED", "BY",
    ]  # fmt: skip
    assert lines[1].split() == ["shop", "web", "qa", "1.0.1", "-", "2", "-", "rendered", "-", "-", "-"]
    assert lines[2].split()[:3] == ["shop", "web", "prod"] and lines[2].split()[7:9] == ["enabled", "yes"]
    assert lines[3].split()[:3] == ["shop", "api", "-"] and "disabled" in lines[3]


def test_get_says_which_flags_a_kind_needs():
    args = argparse.Namespace(project="shop", service=None, environment=None)
    with pytest.raises(CliError) as refused:
        listing.needs(args, "versions", "project", "service")
    assert (refused.value.code, refused.value.message) == (errors.USAGE, "`gantry get versions` needs --service")


# --- the gateway's answers -------------------------------------------------------------------------


def answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("POST", "http://g/api/deploy/deployments"))


def test_a_refused_token_is_exit_4_and_says_how_to_log_in_again():
    with pytest.raises(CliError) as refused:
        check(answer(401, {"detail": "the token is not valid (Signature verification failed)"}), "http://g")
    assert refused.value.code == errors.NOT_LOGGED_IN
    assert "Signature verification failed" in refused.value.message
    assert "gantry login --gateway http://g --token TOKEN" in refused.value.message


def test_any_other_error_is_exit_1_with_the_apis_detail():
    with pytest.raises(CliError) as refused:
        check(answer(409, {"detail": "web is disabled: enable it in catalog"}), "http://g")
    assert refused.value.code == errors.REFUSED
    assert refused.value.message == "409 POST /api/deploy/deployments: web is disabled: enable it in catalog"
    check(answer(202, {}), "http://g")  # a success passes


def test_the_detail_is_read_from_every_shape_of_error():
    assert (
        detail(answer(422, {"detail": [{"loc": ["body", "replicas"], "msg": "too small"}]}))
        == "body.replicas: too small"
    )
    assert detail(answer(404, {"title": "Not Found"})) == "Not Found"
    bare = httpx.Response(502, text="Bad Gateway", request=httpx.Request("GET", "http://g/x"))
    assert detail(bare) == "Bad Gateway"


def test_every_page_of_a_list_is_read_by_its_link():
    asked = []

    def gateway(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        if request.url.params.get("cursor") == "c2":
            return httpx.Response(200, json=[{"code": "qa"}])
        # the service behind the gateway names its own address: only the cursor is taken
        return httpx.Response(
            200, json=[{"code": "dev"}], headers={"Link": '<http://10.0.0.4:8003/e?cursor=c2>; rel="next"'}
        )

    with Api(config.Login("http://g", "t"), transport=httpx.MockTransport(gateway)) as api:
        assert list(api.pages("/api/release/environments", {"q": "e"})) == [{"code": "dev"}, {"code": "qa"}]
    assert asked == [{"limit": "500", "q": "e"}, {"limit": "500", "q": "e", "cursor": "c2"}]


def test_a_gateway_that_does_not_answer_is_exit_3_naming_it():
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    gateway = Api(config.Login("http://127.0.0.1:8000", "t"), transport=httpx.MockTransport(refused))
    with gateway as api, pytest.raises(CliError) as failed:
        api.call("GET", "/api/release/environments")
    assert failed.value.code == errors.UNREACHABLE
    assert failed.value.message == (
        "cannot reach the gateway at http://127.0.0.1:8000 (connection refused): is Gantry running? `gantry up`"
    )


# --- deploy verbs and wait -------------------------------------------------------------------------


def test_a_deployment_request_sends_only_what_was_given():
    args = argparse.Namespace(project="shop", service="web", environment="qa", version="latest")
    args.__dict__ |= {"resources": None, "replicas": None, "strategy": None, "confirm_resource_change": False}
    assert actions.deployment_request(args) == {
        "project": "shop",
        "service": "web",
        "environment": "qa",
        "version": "latest",
    }
    args.__dict__ |= {"resources": ["db,cache", "queue"], "replicas": 3, "strategy": "canary"}
    assert actions.deployment_request(args)["resources"] == ["db", "cache", "queue"]


def test_a_deployment_is_shown_as_a_line_an_id_or_its_json():
    assert actions.show(DEPLOYMENT, "table") == (
        "deployment d1 requested: deploy shop/web 1.0.2 to staging (2 replicas, stable track)\n"
    )
    assert actions.show(DEPLOYMENT, "id") == "d1\n"
    assert json.loads(actions.show(DEPLOYMENT, "json")) == DEPLOYMENT


def deploy_reading(states: list[dict[str, object]]) -> tuple[Api, list[str]]:
    """The deployment as deploy reports it, one state per read (the last one repeated)."""
    paths = []

    def gateway(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=DEPLOYMENT | states[min(len(paths), len(states)) - 1])

    return Api(config.Login("http://g", "t"), transport=httpx.MockTransport(gateway)), paths


def test_wait_prints_each_change_and_ends_at_a_final_state():
    api, paths = deploy_reading(
        [
            {"state": "requested"},
            {"state": "requested"},
            {"state": "progressing", "desired": 2, "available": 1},
            {"state": "succeeded", "desired": 2, "available": 2, "message": "rollout complete"},
        ]
    )
    said = io.StringIO()
    done = actions.wait_for(api, "d1", 60, out=said, sleep=lambda _s: None)
    assert done["state"] == "succeeded" and set(paths) == {"/api/deploy/deployments/d1"}
    assert said.getvalue().splitlines() == [
        "deployment d1 requested",
        "deployment d1 progressing, 1/2 available",
        "deployment d1 succeeded, 2/2 available: rollout complete",
    ]


def test_wait_ends_with_exit_5_when_the_deployment_fails_or_time_runs_out():
    api, _ = deploy_reading([{"state": "failed", "message": "ProgressDeadlineExceeded"}])
    with pytest.raises(CliError) as failed:
        actions.wait_for(api, "d1", 60, out=io.StringIO(), sleep=lambda _s: None)
    assert (failed.value.code, failed.value.message) == (
        errors.NOT_DONE,
        "deployment d1 failed: ProgressDeadlineExceeded",
    )

    api, paths = deploy_reading([{"state": "progressing"}])
    now = iter(range(100))
    with pytest.raises(CliError) as late:
        actions.wait_for(api, "d1", 3, out=io.StringIO(), clock=lambda: next(now), sleep=lambda _s: None)
    assert late.value.code == errors.NOT_DONE and "still progressing after 3 s" in late.value.message
    assert "`gantry wait d1`" in late.value.message and len(paths) >= 2


# --- events ----------------------------------------------------------------------------------------


def test_server_sent_events_are_read_frame_by_frame():
    stream = [
        "retry: 3000",
        ": connected ab12",
        "",
        "id: deploy.status:0:4",
        "event: deploy.status",
        'data: {"id": "e1"}',
        "",
        ": keep-alive",
        "",
        "event: lagged",
        'data: {"dropped": 3}',
        "",
    ]
    assert list(events.frames(stream)) == [("deploy.status", '{"id": "e1"}'), ("lagged", '{"dropped": 3}')]


def test_an_event_is_one_line_with_its_time_topic_subject_and_chain():
    envelope = {
        "id": "e1",
        "type": "deploy.status",
        "time": "2024-05-01T12:00:03.123456Z",
        "subject": "s-42",
        "correlation_id": "1a2b3c4d5e6f",
        "data": {
            "service_id": "s-42",
            "project": "shop",
            "state": "rendered",
            "version": "1.0.2",
            "resources": {"db": 1},
        },
    }
    assert (
        events.event_line(envelope) == "12:00:03.123  deploy.status  s-42  cid=1a2b3c4d  state=rendered version=1.0.2"
    )


# --- token issue: whose secret -------------------------------------------------------------------


def test_token_issue_says_it_used_gantry_secret(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GANTRY_SECRET", SECRET)
    assert main(["token", "issue", "--user", "ada", "--role", "org-admin"]) == 0
    assert capsys.readouterr().err == "gantry: signed with the installation secret GANTRY_SECRET\n"


def test_token_issue_names_the_secret_file_it_used(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("GANTRY_SECRET", raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))
    (tmp_path / "secret").write_text("s" * 43 + "\n")
    assert main(["token", "issue", "--user", "ada", "--role", "org-admin"]) == 0
    assert capsys.readouterr().err == f"gantry: signed with the installation secret {tmp_path / 'secret'}\n"


def test_token_issue_elsewhere_refuses_instead_of_making_a_new_secret(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("GANTRY_SECRET", raising=False)
    monkeypatch.delenv("GANTRY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["token", "issue", "--user", "ada", "--role", "org-admin"]) == errors.USAGE
    printed = capsys.readouterr()
    assert printed.out == "" and f"{tmp_path / '.gantry' / 'secret'} does not exist" in printed.err
    assert "GANTRY_HOME" in printed.err and "GANTRY_SECRET" in printed.err
    assert not (tmp_path / ".gantry").exists(), "no new secret made"
