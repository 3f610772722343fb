"""The client commands' arguments (argparse) and what each runs: login, logout, get, release,
the deploy verbs, wait and events tail."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import jwt

from gantry.client import actions, config, events, listing
from gantry.client.api import Api
from gantry.client.errors import USAGE, CliError
from gantry.client.output import FORMATS, dump, table
from shared.settings import Settings

Subparsers = Any  # argparse's _SubParsersAction, private in typeshed
DEFAULT_TIMEOUT = 300.0


def add_client_commands(commands: Subparsers) -> None:
    _add_login(commands)
    get = commands.add_parser("get", help="list services, versions, deployments, environments or resources")
    get.add_argument("kind", choices=listing.KINDS)
    _placement(get, required=False)
    get.add_argument("-o", "--output", choices=FORMATS, default="table")
    get.set_defaults(run=_get)
    release = commands.add_parser("release", help="release a service to an environment, or one version there")
    _placement(release, required=True)
    release.add_argument("--version", help="release this version (default: release the service to the environment)")
    release.add_argument("-o", "--output", choices=FORMATS, default="table")
    release.set_defaults(run=_release)
    deploy = _verb(commands, "deploy", "deploy a released version")
    deploy.add_argument("--version", default="latest", help='a released version, or "latest" (the default)')
    deploy.add_argument(
        "--resources",
        action="append",
        help="resource names, comma-separated (default: the last deployment's; '' for none)",
    )
    deploy.add_argument("--replicas", type=_replicas, help="default: what runs now, else 1")
    deploy.add_argument("--strategy", choices=("rolling", "canary"))
    deploy.add_argument("--confirm-resource-change", action="store_true")
    rollback = _verb(commands, "rollback", "deploy the version deployed before (or --to-version)")
    rollback.add_argument("--to-version", help="an earlier version (default: the one before the current one)")
    _verb(commands, "scale", "change the stable track's replicas").add_argument(
        "--replicas", type=_replicas, required=True
    )
    canary = commands.add_parser("canary", help="promote or abort a canary").add_subparsers(
        required=True, metavar="ACTION"
    )
    _verb(canary, "promote", "make the canary's version the stable one")
    _verb(canary, "abort", "remove the canary track; the stable version keeps serving")
    _verb(commands, "undeploy", "remove the service's workload from the environment")
    _add_watching(commands)


def _add_watching(commands: Subparsers) -> None:
    wait = commands.add_parser("wait", help="wait until a deployment succeeds or fails (progress on stderr)")
    wait.add_argument("deployment", help="its id (from deploy, rollback, scale … or `gantry get deployments`)")
    wait.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, help="seconds (default 300)")
    wait.add_argument("-o", "--output", choices=("table", "id", "json", "yaml"), default="table")
    wait.set_defaults(run=_wait)
    tail = commands.add_parser("events", help="Gantry's events").add_subparsers(required=True, metavar="ACTION")
    follow = tail.add_parser("tail", help="the recent events, then (--follow) new ones as they come")
    follow.add_argument("-f", "--follow", action="store_true", help="keep reading new events until Ctrl-C")
    follow.add_argument("--topic", action="append", default=[], help="only these topics (repeat, or comma-separated)")
    follow.add_argument("--limit", type=_recent, default=20, help="how many recent events, 1 to 200 (default 20)")
    follow.add_argument("-o", "--output", choices=("table", "json"), default="table", help="json: one per line")
    follow.set_defaults(run=_events)


def _add_login(commands: Subparsers) -> None:
    login = commands.add_parser("login", help="check a token against a gateway and keep both for the commands")
    login.add_argument("--gateway", help="the gateway's address (default: this host's, http://127.0.0.1:8000)")
    login.add_argument("--token", required=True, help="a token from `gantry token issue`; - reads it from stdin")
    login.set_defaults(run=_login)
    commands.add_parser("logout", help="forget the kept gateway and token").set_defaults(run=_logout)


def _placement(parser: argparse.ArgumentParser, *, required: bool) -> None:
    for flag in ("project", "service", "environment"):
        parser.add_argument(f"--{flag}", required=required)


def _verb(commands: Subparsers, name: str, text: str) -> argparse.ArgumentParser:
    verb: argparse.ArgumentParser = commands.add_parser(name, help=text)
    _placement(verb, required=True)
    verb.add_argument("--wait", action="store_true", help="wait until it succeeds or fails (progress on stderr)")
    verb.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, help="for --wait, seconds (default 300)")
    verb.add_argument("-o", "--output", choices=("table", "id", "json", "yaml"), default="table")
    verb.set_defaults(run=_act, verb=name)
    return verb


def _replicas(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of replicas, 1 or more")
    return int(text)


def _recent(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 1 to 200")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give more than 0 seconds")
    return seconds


def _api() -> Api:
    return Api(config.require(config.config_path()))


def _login(args: argparse.Namespace, settings: Settings) -> int:
    token = sys.stdin.readline().strip() if args.token == "-" else args.token.strip()
    if not token:
        raise CliError(USAGE, "the token is empty: give one from `gantry token issue --user NAME --role ROLE`")
    login = config.Login(gateway=(args.gateway or settings.gateway_url).rstrip("/"), token=token)
    with Api(login) as api:
        api.call("GET", "/api/release/environments", params={"limit": 1})  # every role may read them
    path = config.config_path()
    config.save(login, path)
    print(f"logged in to {login.gateway}{_whose(token)}; kept in {path}")
    return 0


def _whose(token: str) -> str:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    return f" as {claims.get('sub')} ({', '.join(claims.get('roles') or ()) or 'no roles'})"


def _logout(_args: argparse.Namespace, _settings: Settings) -> int:
    path = config.config_path()
    print(f"logged out: removed {path}" if config.remove(path) else f"not logged in (no {path})")
    return 0


def _get(args: argparse.Namespace, _settings: Settings) -> int:
    with _api() as api:
        found = listing.GETTERS[args.kind](api, args)
    if args.output != "table":
        sys.stdout.write(dump(found, args.output))
    elif not found:
        print(f"no {args.kind} found", file=sys.stderr)
    else:
        rows = listing.service_rows(found) if args.kind == "services" else found
        sys.stdout.write(table(rows, listing.COLUMNS[args.kind]))
    return 0


def _release(args: argparse.Namespace, _settings: Settings) -> int:
    with _api() as api:
        found, line = actions.release(api, args)
    sys.stdout.write(line + "\n" if args.output == "table" else dump(found, args.output))
    return 0


def _act(args: argparse.Namespace, _settings: Settings) -> int:
    with _api() as api:
        deployment = actions.act(api, args)
        if args.wait:
            print(actions.summary(deployment), file=sys.stderr)
            deployment = actions.wait_for(api, deployment["id"], args.timeout)
    sys.stdout.write(actions.show(deployment, args.output))
    return 0


def _wait(args: argparse.Namespace, _settings: Settings) -> int:
    with _api() as api:
        deployment = actions.wait_for(api, args.deployment, args.timeout)
    sys.stdout.write(actions.show(deployment, args.output))
    return 0


def _events(args: argparse.Namespace, _settings: Settings) -> int:
    topics = [name.strip() for value in args.topic for name in value.split(",") if name.strip()]
    with _api() as api:
        events.tail(api, topics, args.limit, args.follow, args.output)
    return 0
