"""The ``gantry`` command: ``up``, ``token issue``, ``pipeline report``, ``outbox``, ``secrets rotate``,
and the client commands of ``gantry.client`` (``login``, ``get``, ``deploy``, ``wait``, ``events tail`` …)."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from gantry.client.api import unreachable
from gantry.client.commands import add_client_commands
from gantry.client.errors import UNREACHABLE, USAGE, CliError
from gantry.secret_lookup import find_secret
from shared.auth import issue_token, webhook_secret
from shared.errors import GantryError
from shared.settings import SERVICES, Settings

PIPELINE_STATUSES = (
    "created",
    "waiting_for_resource",
    "preparing",
    "pending",
    "running",
    "success",
    "failed",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
)

FINISHED = ("success", "failed", "canceled", "skipped")
STAGES = ("build", "test", "package")  # the templates' .gitlab-ci.yml
JOB_STATUSES = {  # each stage's job, for a pipeline's status
    "success": ("success", "success", "success"),
    "failed": ("success", "failed", "skipped"),
    "canceled": ("success", "canceled", "skipped"),
    "running": ("success", "running", "created"),
    "manual": ("success", "success", "manual"),
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"gantry: bad setting: {exc}", file=sys.stderr)
        return USAGE
    try:
        return int(args.run(args, settings) or 0)
    except CliError as exc:
        print(f"gantry: {exc.message}", file=sys.stderr)
        return exc.code
    except httpx.TransportError as exc:  # the commands that talk to the gateway of the settings
        url = exc.request.url
        print(f"gantry: {unreachable(f'{url.scheme}://{url.netloc.decode()}', exc).message}", file=sys.stderr)
        return UNREACHABLE
    except (GantryError, RuntimeError, httpx.HTTPError) as exc:
        print(f"gantry: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C, as `events tail --follow` ends
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gantry",
        description="Gantry: from 'create' to 'running in Kubernetes'",
        epilog="exit codes: 0 done, 1 the API refused, 2 usage, 3 gateway unreachable, "
        "4 not logged in or token refused, 5 deployment failed or wait timed out",
    )
    parser.add_argument("--version", action="version", version=f"gantry {version('gantry')}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start the broker (embedded unless configured) and the five services")
    up.set_defaults(run=_up)
    token = commands.add_parser("token", help="API tokens").add_subparsers(required=True, metavar="ACTION")
    issue = token.add_parser("issue", help="print a signed token for a user and roles")
    issue.add_argument("--user", required=True)
    issue.add_argument(
        "--role",
        action="append",
        required=True,
        dest="roles",
        help="org-admin, deploy-admin or <project>:project-owner|source-code-admin|project-member",
    )
    issue.add_argument("--hours", type=_positive_hours, default=12, help="validity in hours, at least 1 (default 12)")
    issue.set_defaults(run=_token_issue)
    pipeline = commands.add_parser("pipeline", help="CI pipelines").add_subparsers(required=True, metavar="ACTION")
    report = pipeline.add_parser("report", help="post a GitLab-format Pipeline Hook for a service")
    report.add_argument("--project", required=True)
    report.add_argument("--service", required=True)
    report.add_argument("--status", required=True, choices=PIPELINE_STATUSES)
    report.add_argument("--ref", default="main")
    report.add_argument("--sha", help="commit (default: a local repository's head); one commit, one version")
    report.add_argument("--tag", action="store_true", help="the ref is a tag (the version is named after it)")
    report.add_argument("--pipeline-id", type=int, help="report on an existing pipeline (default: a new one)")
    report.add_argument("--gateway", help="Gantry's address (default: the gateway's URL)")
    report.set_defaults(run=_pipeline_report)
    outbox = commands.add_parser("outbox", help="outbox rows that failed for good (org admins)")
    outbox_actions = outbox.add_subparsers(required=True, metavar="ACTION")
    for action, text in (
        ("list", "list every service's dead-lettered rows"),
        ("retry", "send a dead-lettered row again, before the rows of its key that wait"),
        ("discard", "drop a dead-lettered row for good; the rows of its key go on"),
    ):
        command = outbox_actions.add_parser(action, help=text)
        if action != "list":
            command.add_argument("--service", required=True, choices=SERVICES)
            command.add_argument("row", type=int, help="the row's outbox_id (from `gantry outbox list`)")
        command.add_argument("--gateway", help="Gantry's address (default: the gateway's URL)")
        command.set_defaults(run=_outbox, action=action)
    secrets = commands.add_parser("secrets", help="secret values sealed at rest").add_subparsers(
        required=True, metavar="ACTION"
    )
    rotate = secrets.add_parser(
        "rotate", help="seal every stored secret value again under GANTRY_ENCRYPTION_KEY (old keys then unneeded)"
    )
    rotate.set_defaults(run=_secrets_rotate)
    add_client_commands(commands)
    return parser


def _up(_args: argparse.Namespace, settings: Settings) -> int:
    from gantry.up import run_up

    return run_up(settings)


def _positive_hours(text: str) -> int:
    try:
        hours = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of hours") from None
    if hours < 1:
        raise argparse.ArgumentTypeError(f"{hours} hours would make a token that is already expired: give 1 or more")
    return hours


def _token_issue(args: argparse.Namespace, settings: Settings) -> int:
    secret, source = find_secret(settings)
    token = issue_token(secret, args.user, args.roles, args.hours * 3600)
    print(f"gantry: signed with the installation secret {source}", file=sys.stderr)
    print(token)
    return 0


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    gateway = (args.gateway or settings.gateway_url).rstrip("/")
    admin = {"Authorization": f"Bearer {issue_token(find_secret(settings)[0], 'gantry-cli', ['org-admin'], 300)}"}
    with httpx.Client(timeout=30, headers=admin) as client:
        if args.action == "list":
            found = {}
            for service in SERVICES:
                answer = client.get(f"{gateway}/api/{service}/outbox/dead-letters")
                if answer.status_code != 200:
                    raise RuntimeError(f"{service}: {_detail(answer)}")
                found[service] = answer.json()
            print(json.dumps(found, indent=2))
            return 0
        url = f"{gateway}/api/{args.service}/outbox/dead-letters/{args.row}"
        answer = client.post(f"{url}/retry") if args.action == "retry" else client.delete(url)
    if answer.status_code != 200:
        raise RuntimeError(_detail(answer))
    print(json.dumps(answer.json(), indent=2))
    return 0


def _secrets_rotate(_args: argparse.Namespace, settings: Settings) -> int:
    from services.deploy.rotation import rotate_database
    from shared.sealing import SealingError

    try:
        done = asyncio.run(rotate_database(settings))
    except SealingError as exc:
        raise RuntimeError(f"nothing was changed: {exc}") from exc
    print(json.dumps({"key_id": done.key_id, "values_sealed": done.values, "rows_changed": done.rows}, indent=2))
    return 0


def _pipeline_report(args: argparse.Namespace, settings: Settings) -> int:
    gateway = (args.gateway or settings.gateway_url).rstrip("/")
    secret, _source = find_secret(settings)
    admin = {"Authorization": f"Bearer {issue_token(secret, 'gantry-cli', ['org-admin'], 300)}"}
    with httpx.Client(timeout=30) as client:
        url = f"{gateway}/api/catalog/projects/{quote(args.project)}/services/{quote(args.service)}"
        found = client.get(url, headers=admin)
        if found.status_code != 200:
            raise RuntimeError(_detail(found))
        service = found.json()
        body = pipeline_hook_body(service, args)
        delivery = str(uuid.uuid4())
        headers = {
            "X-Gitlab-Event": "Pipeline Hook",
            "X-Gitlab-Token": webhook_secret(secret, service["scm_project_id"]),
            "X-Gitlab-Event-UUID": delivery,
            "Idempotency-Key": delivery,
            "User-Agent": "gantry-cli",
        }
        answer = client.post(f"{gateway}/webhooks/gitlab", json=body, headers=headers)
    if answer.status_code != 202:  # 202: checked and queued for versioning
        raise RuntimeError(_detail(answer))
    print(json.dumps({"pipeline_id": body["object_attributes"]["id"], **answer.json()}, indent=2))
    return 0


def pipeline_hook_body(service: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A Pipeline Hook body in GitLab's format (see GitLab's webhook events documentation), with
    one job per stage of the templates' CI file, in ``builds``."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sha = args.sha or _head_sha(service["repository_url"], args.ref) or uuid.uuid4().hex * 2
    finished = now if args.status in FINISHED else None
    pipeline_id = args.pipeline_id or int(time.time() * 1000) % 2_000_000_000
    return {
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pipeline_id,
            "ref": args.ref,
            "tag": args.tag,
            "sha": sha[:40],
            "status": args.status,
            "stages": list(STAGES),
            "created_at": now,
            "finished_at": finished,
            "source": "push",
            "url": None,
        },
        "project": {
            "id": service["scm_project_id"],
            "name": service["code"],
            "path_with_namespace": service["repository_path"],
            "web_url": service["repository_web_url"],
            "git_http_url": service["repository_url"],
        },
        "commit": {
            "id": sha[:40],
            "message": f"{args.ref} reported by gantry pipeline report",
            "author": {"name": "gantry-cli", "email": "gantry@localhost"},
        },
        "builds": _jobs(pipeline_id, args.status, now),
    }


def _jobs(pipeline_id: int, status: str, now: str) -> list[dict[str, Any]]:
    """The templates' jobs as a pipeline of ``status`` leaves them: a failure in ``test``, say."""
    statuses = JOB_STATUSES.get(status, (status,) * len(STAGES))
    return [
        {
            "id": pipeline_id * 10 + number,  # a pipeline's jobs keep their ids when it is reported again
            "stage": stage,
            "name": stage,
            "status": job_status,
            "created_at": now,
            "started_at": None if job_status in ("created", "pending", "manual") else now,
            "finished_at": now if job_status in FINISHED else None,
            "allow_failure": False,
            "when": "manual" if job_status == "manual" else "on_success",
            "manual": job_status == "manual",
        }
        for number, (stage, job_status) in enumerate(zip(STAGES, statuses, strict=True), start=1)
    ]


def _head_sha(repository_url: str, ref: str) -> str | None:
    if not repository_url.startswith("file://"):
        return None
    result = subprocess.run(["git", "ls-remote", repository_url, ref], capture_output=True, text=True, timeout=10)
    line = result.stdout.split("\n", 1)[0]
    return line.split("\t", 1)[0] if result.returncode == 0 and line else None


def _detail(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {response.json()['detail']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:300]}"


if __name__ == "__main__":
    sys.exit(main())
