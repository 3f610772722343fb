"""Deploy's writes on record, through its HTTP API: a deployment and its record in one transaction,
a refusal with its reason, a resource recorded by name and never by its values."""

from __future__ import annotations

import httpx

from shared.outbox import UnitOfWork
from tests.support import token
from tests.unit.test_audit import records
from tests.unit.test_deploy_api import DEPLOYER, client, cluster, deployment  # noqa: F401 - fixtures
from tests.unit.test_deploy_handlers import (  # noqa: F401 - uow: the fixture
    ENV,
    PROJECT,
    SERVICE,
    add_resource,
    announce,
    release,
    uow,
)


async def test_a_deployment_and_its_refusals_are_on_record(client: httpx.AsyncClient, uow: UnitOfWork) -> None:  # noqa: F811
    await release(uow, "1.0.0")
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders")
    owner = token(f"{PROJECT}:project-owner", user="olga")
    body = deployment("1.0.0", resources=["orders-db"])
    assert (await client.post("/deployments", json=body, headers=owner)).status_code == 403
    accepted = await client.post("/deployments", json=body, headers=DEPLOYER | {"X-Correlation-Id": "ticket-7"})
    assert accepted.status_code == 202, accepted.text

    refused, made = [(envelope, data) for envelope, data in await records(uow)]
    target = {"project": PROJECT, "service": SERVICE, "environment": ENV, "version": "1.0.0"}
    assert refused[1]["action"] == "deploy.create_deployment" and refused[1]["target"] == target
    assert (refused[1]["actor"], refused[1]["outcome"], refused[1]["changed"]) == ("olga", 403, False)
    assert "deploy-admin" in refused[1]["reason"]
    assert made[0].correlation_id == "ticket-7" and made[1]["target"] == target
    assert (made[1]["actor"], made[1]["roles"], made[1]["outcome"], made[1]["changed"]) == (
        "dora",
        ["deploy-admin"],
        202,
        True,
    )


async def test_a_resource_is_recorded_by_name_never_by_value(client: httpx.AsyncClient, uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    body = {"name": "orders-db", "type": "database", "data": {"password": "s3cret-value", "url": "postgres://db"}}
    assert (await client.post(f"/environments/{ENV}/resources", json=body, headers=DEPLOYER)).status_code == 201
    [(envelope, data)] = await records(uow)
    assert data["action"] == "deploy.create_resource" and data["target"] == {
        "environment": ENV,
        "resource": "orders-db",
    }
    assert "s3cret-value" not in envelope.model_dump_json()
