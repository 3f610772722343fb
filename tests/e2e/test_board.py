"""The state board in a real headless Chromium, against ``gantry up``: after a chain runs, the page
shows the running version in its matrix cell, the chain's hops with their times, a failed pipeline
and a dead letter's reasons; a service's page offers a deploy admin its actions and a project member
none; the chains are still there after the gateway restarts. Screenshots go to
``.artifacts/browser/`` (printed)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.auth import issue_token
from tests.e2e.stack import Stack
from tests.e2e.test_chain import report, until
from tests.harness.chromium import Browser, Page, chromium_binary
from tests.support import SECRET, eventually

pytestmark = pytest.mark.e2e

PROJECT, SERVICE, ENV = "shop", "web service", "staging"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "browser"
ORG_ADMIN = issue_token(SECRET, "root", ["org-admin"])
MEMBER = issue_token(SECRET, "pam", [f"{PROJECT}:project-member"])
CELL = f'td.cell[data-project="{PROJECT}"][data-service="{SERVICE}"][data-environment="{ENV}"]'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        binary = chromium_binary()
    except RuntimeError as exc:
        pytest.fail(f"the board's browser test needs Chromium: {exc}")
    running = Browser(binary).start()
    try:
        yield running
    finally:
        running.stop()


async def _a_chain_with_a_failure(stack: Stack, api: httpx.AsyncClient) -> dict[str, Any]:
    """A released, deployed version; a failed pipeline after it; a record no consumer can read."""
    assert (
        await api.post("/api/catalog/projects", json={"code": PROJECT, "name": "Shop", "gitlab_group": "acme"})
    ).status_code == 201
    service = {"code": SERVICE, "name": "Web", "group": "com.acme.shop", "type": "python-fastapi"}
    assert (await api.post(f"/api/catalog/projects/{PROJECT}/services", json=service)).status_code == 201
    env = {"code": ENV, "name": "Staging", "tier": "staging"}
    assert (await api.post("/api/release/environments", json=env)).status_code == 201
    base = f"/api/release/projects/{PROJECT}/services/{SERVICE}"
    await until(lambda: api.post(f"{base}/releases", json={"environment": ENV}), 201)
    assert (await api.put(f"{base}/auto-release", json={"enabled": True})).status_code == 200
    await eventually(lambda: _reported(stack, 101), timeout=60, interval=0.2)
    version = await stack.wait_for_version(api, PROJECT, SERVICE, 101)
    deployment = {
        "project": PROJECT,
        "service": SERVICE,
        "environment": ENV,
        "version": version["name"],
        "replicas": 2,
        "resources": [],
    }
    answers: list[httpx.Response] = []

    async def deployed() -> bool:  # deploy learns of the release through the bus
        answers.append(await api.post("/api/deploy/deployments", json=deployment))
        return answers[-1].status_code == 202

    try:
        await eventually(deployed, timeout=60, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"deploy refused: {answers[-1].text}") from exc
    report(stack, 102, status="failed")

    async def running() -> bool:
        answer = (await api.get(f"/api/deploy/services/{PROJECT}/{SERVICE}")).json()
        stable = answer["environments"][0]["stable"] if "environments" in answer else None
        return bool(stable and stable["version"] == version["name"] and stable["state"] == "rendered")

    await eventually(running, timeout=60, interval=0.2)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:  # a record that is no event: every consumer of the topic dead-letters it
        await producer.send_and_wait("service.changed", json.dumps({"type": "service.changed"}).encode(), key=b"x")
    finally:
        await producer.stop()
    return version


async def _reported(stack: Stack, pipeline_id: int) -> bool:
    try:
        report(stack, pipeline_id)
    except AssertionError:
        return False  # the service is not known at the front door yet
    return True


async def _shot(page: Page, name: str) -> Path:
    path = await page.screenshot(ARTIFACTS / name)
    print(f"\nscreenshot: {path}")
    return path


async def test_the_board_shows_what_runs_the_chain_and_what_failed(tmp_path: Path, browser: Browser) -> None:
    with Stack(tmp_path) as stack:
        async with stack.client() as api:
            version = await _a_chain_with_a_failure(stack, api)
        async with browser.page() as page:
            await page.open(f"{stack.gateway}/#token={ORG_ADMIN}")
            cell = await page.wait_for(f"document.querySelector('{CELL} .version.stable')?.textContent")
            assert cell == version["name"]
            counts = await page.evaluate(f"document.querySelector('{CELL} .replicas').textContent")
            assert "2 desired" in counts or "2/2" in counts
            hops = await page.wait_for(_hops_of_chain_with("pipeline.succeeded"))
            assert hops[:2] == ["gitlab.hook.received", "pipeline.succeeded"], hops
            assert "version.created" in hops
            times = await page.evaluate("[...document.querySelectorAll('.chain .hop .when')].map(e => e.textContent)")
            assert all(" ms" in t or " s" in t for t in times) and any("." in t.split(" · ")[1] for t in times)
            failed = await page.wait_for("document.querySelector('#pipelines tr.failed-pipeline')?.textContent")
            assert "#102" in failed and f"{PROJECT}/{SERVICE}" in failed
            letter = await page.wait_for("document.querySelector('#dead-letters tr.dead-letter')?.textContent")
            assert "field `source`: required" in letter and "Retry" in letter, letter
            await _shot(page, "board-org-admin.png")

        async with browser.page() as page:
            await page.open(f"{stack.gateway}/#token={ORG_ADMIN}&view=/service/{PROJECT}/{SERVICE}")
            await page.wait_for(f"!!document.querySelector('.env[data-environment=\"{ENV}\"] tr.deployment')")
            buttons = await page.evaluate(
                "[...document.querySelectorAll('.actions button')].map(b => b.dataset.action)"
            )
            assert {"Deploy", "Rollback", "Scale"} <= set(buttons), buttons
            failed = await page.wait_for("document.querySelector('#service-pipelines tr.failed-pipeline')?.textContent")
            assert "#102" in failed
            await page.wait_for("!!document.querySelector('#service-chains .chain .hop[data-topic=\"deploy.status\"]')")
            await _shot(page, "service-org-admin.png")

        async with browser.page() as page:
            await page.open(f"{stack.gateway}/#token={MEMBER}")
            assert (
                await page.wait_for(f"document.querySelector('{CELL} .version.stable')?.textContent") == version["name"]
            )
            await page.wait_for(_hops_of_chain_with("pipeline.succeeded"))
            assert await page.evaluate("document.getElementById('org-only').hidden") is True
            assert "Retry" not in await page.evaluate("document.getElementById('dead-letters').textContent")
            await _shot(page, "board-project-member.png")
            await page.evaluate(f"location.hash = '#/service/{PROJECT}/{SERVICE}'")
            await page.wait_for("!!document.querySelector('.env tr.deployment')")
            assert await page.evaluate("document.querySelectorAll('.actions button').length") == 0
            assert "Read-only" in await page.evaluate("document.getElementById('service-note').textContent")

        gateway = stack.service_pids()["gateway"]
        os.kill(gateway, signal.SIGKILL)
        await eventually(lambda: _answers_again(stack, gateway), timeout=60, interval=0.2)
        async with browser.page() as page:
            await page.open(f"{stack.gateway}/#token={ORG_ADMIN}")
            hops = await page.wait_for(_hops_of_chain_with("pipeline.succeeded"))
            assert hops[:2] == ["gitlab.hook.received", "pipeline.succeeded"], "read back from the topics"
            await _shot(page, "board-after-restart.png")


def _hops_of_chain_with(topic: str) -> str:
    """A script: the topics of the first chain that has a hop of ``topic`` (null while none has)."""
    return (
        "(() => { const chain = [...document.querySelectorAll('.chain')]"
        f".find(c => c.querySelector('.hop[data-topic=\"{topic}\"]'));"
        " return chain ? [...chain.querySelectorAll('.hop')].map(h => h.dataset.topic) : null; })()"
    )


async def _answers_again(stack: Stack, killed: int) -> bool:
    if stack.service_pids().get("gateway") in (None, killed):
        return False
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(f"{stack.gateway}/me", headers={"Authorization": f"Bearer {ORG_ADMIN}"})
    except httpx.HTTPError:
        return False
    return answer.status_code == 200
