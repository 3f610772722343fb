"""The deploy verbs (deploy, rollback, scale, canary promote|abort, undeploy), release, and
``wait``: each names the deployment it made, and ``--wait`` follows it to its end."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import quote

from gantry.client.api import Api
from gantry.client.errors import NOT_DONE, CliError
from gantry.client.output import dump

FINAL = ("rendered", "succeeded", "failed", "removed")  # deploy's final states
POLL_SECONDS = 0.5
Item = dict[str, Any]


def service_path(args: argparse.Namespace) -> str:
    parts = (quote(args.environment, safe=""), quote(args.project, safe=""), quote(args.service, safe=""))
    return "/api/deploy/environments/{}/projects/{}/services/{}".format(*parts)


def deployment_request(args: argparse.Namespace) -> Item:
    """``POST /api/deploy/deployments``'s body: only what was given, the API's defaults for the rest."""
    body: Item = {"project": args.project, "service": args.service, "environment": args.environment}
    body["version"] = args.version
    if args.resources is not None:
        body["resources"] = [name for value in args.resources for name in value.split(",") if name]
    if args.replicas is not None:
        body["replicas"] = args.replicas
    if args.strategy:
        body["strategy"] = args.strategy
    if args.confirm_resource_change:
        body["confirm_resource_change"] = True
    return body


def act(api: Api, args: argparse.Namespace) -> Item:
    """Send the verb's request, with an Idempotency-Key (a resend returns the same deployment)."""
    key = {"Idempotency-Key": uuid.uuid4().hex}
    verb = args.verb
    if verb == "deploy":
        answer: Item = api.call("POST", "/api/deploy/deployments", json=deployment_request(args), headers=key)
    elif verb == "rollback":
        body = {"version": args.to_version} if args.to_version else None
        answer = api.call("POST", f"{service_path(args)}/rollback", json=body, headers=key)
    elif verb == "scale":
        answer = api.call("PUT", f"{service_path(args)}/replicas", json={"replicas": args.replicas}, headers=key)
    elif verb in ("promote", "abort"):
        answer = api.call("POST", f"{service_path(args)}/canary/{verb}", headers=key)
    else:
        answer = api.call("DELETE", service_path(args), headers=key)
    return answer


def summary(deployment: Item) -> str:
    """One line naming the deployment: ``deployment 4f2… requested: deploy shop/web 1.0.2 to staging``."""
    d = deployment
    where = "from" if d["action"] == "undeploy" else "to"
    what = f"{d['action']} {d['project']}/{d['service']} {d['version']} {where} {d['environment']}"
    shape = f"{d['replicas']} replica{'s' if d['replicas'] != 1 else ''}, {d['track']} track"
    return f"deployment {d['id']} {d['state']}: {what} ({shape})"


def progress(deployment: Item) -> str:
    d = deployment
    counts = f", {d['available']}/{d['desired']} available" if d.get("available") is not None else ""
    message = f": {d['message']}" if d.get("message") else ""
    return f"deployment {d['id']} {d['state']}{counts}{message}"


def wait_for(
    api: Api,
    deployment_id: str,
    timeout: float,
    *,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Item:
    """Read the deployment until its state is final, printing each change on ``out`` (stderr).
    A failed deployment, or one still under way at ``timeout``, raises CliError(NOT_DONE)."""
    out = out or sys.stderr
    deadline = clock() + timeout
    said = ""
    while True:
        found: Item = api.call("GET", f"/api/deploy/deployments/{quote(deployment_id, safe='')}")
        line = progress(found)
        if line != said:
            print(line, file=out, flush=True)
            said = line
        if found["state"] == "failed":
            raise CliError(NOT_DONE, f"deployment {deployment_id} failed: {found.get('message') or 'no reason given'}")
        if found["state"] in FINAL:
            return found
        if clock() >= deadline:
            raise CliError(
                NOT_DONE,
                f"deployment {deployment_id} is still {found['state']} after {timeout:g} s: "
                f"`gantry wait {deployment_id}` waits on",
            )
        sleep(max(0.0, min(POLL_SECONDS, deadline - clock())))


def show(deployment: Item, fmt: str) -> str:
    if fmt == "id":
        return f"{deployment['id']}\n"
    if fmt in ("json", "yaml"):
        return dump(deployment, fmt)
    return summary(deployment) + "\n"


def release(api: Api, args: argparse.Namespace) -> tuple[Item, str]:
    """Release the service to an environment, or (``--version``) one version where it is released."""
    base = f"/api/release/projects/{quote(args.project, safe='')}/services/{quote(args.service, safe='')}/releases"
    where = f"{args.project}/{args.service}"
    if args.version:
        found = api.call("POST", f"{base}/{quote(args.environment, safe='')}/versions", json={"version": args.version})
        return found, f"{where} {found['version']} released to {found['environment']}"
    found = api.call("POST", base, json={"environment": args.environment})
    return found, f"{where} released to {found['environment']}: {found['version_choice']}"
