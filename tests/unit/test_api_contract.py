"""What a client generator and a person with a browser get from every service: errors as RFC 9457
problems with a stable code, a 405 naming every method its path takes, an OpenAPI document with the
bearer scheme, readable operation ids and every error documented, and Swagger UI that needs nothing
from the internet, loading the document of the service it is served by.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.catalog.app import create_app as catalog_app
from services.catalog.models import Project, Service
from services.catalog.running import ServiceRun
from services.deploy.app import create_app as deploy_app
from services.gateway.app import create_app as gateway_app
from services.release.app import create_app as release_app
from services.versioning.app import create_app as versioning_app
from shared.settings import Settings
from tests.support import ADMIN, SECRET, token

PROBLEM = "application/problem+json"
APPS = {
    "catalog": catalog_app,
    "versioning": versioning_app,
    "release": release_app,
    "deploy": deploy_app,
    "gateway": gateway_app,
}


@pytest.fixture
async def catalog(make_uow, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    uow = await make_uow("catalog", [Project, Service, ServiceRun])
    api = catalog_app(Settings(home=tmp_path, secret=SECRET, request_max_bytes=2048))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://catalog") as http:
        yield http


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["status"] == status and body["code"] == code and body["type"] == f"urn:gantry:problem:{code}"
    assert body["title"] and isinstance(body["detail"], str) and body["detail"]
    return body


async def test_errors_are_problems_with_a_stable_code(catalog: httpx.AsyncClient) -> None:
    project = {"code": "shop", "name": "Shop", "gitlab_group": "acme-shop"}
    assert (await catalog.post("/projects", json=project, headers=ADMIN)).status_code == 201
    assert_problem(await catalog.post("/projects", json=project), 401, "not-authenticated")
    refused = assert_problem(
        await catalog.post("/projects", json=project, headers=token("shop:project-owner")), 403, "forbidden"
    )
    assert "org-admin" in refused["detail"]
    again = assert_problem(await catalog.post("/projects", json=project, headers=ADMIN), 409, "conflict")
    assert "already exists" in again["detail"]
    missing = assert_problem(await catalog.get("/projects/shop/services/web", headers=ADMIN), 404, "not-found")
    assert "web" in missing["detail"]
    assert_problem(await catalog.get("/projects?cursor=bm90LWEtbGlzdA", headers=ADMIN), 400, "bad-request")
    nowhere = assert_problem(await catalog.get("/nothing/here", headers=ADMIN), 404, "not-found")
    assert "/nothing/here" in nowhere["detail"]


async def test_a_422_says_which_fields_in_detail_and_lists_them_in_errors(catalog: httpx.AsyncClient) -> None:
    answer = await catalog.post("/projects", json={"code": "shop", "name": 5, "colour": "red"}, headers=ADMIN)
    body = assert_problem(answer, 422, "invalid-input")
    where = {tuple(error["loc"]): error for error in body["errors"]}
    assert set(where) == {("body", "name"), ("body", "gitlab_group"), ("body", "colour")}
    assert all(error["msg"] and error["type"] for error in body["errors"])
    assert "body.gitlab_group: Field required" in body["detail"] and "body.colour" in body["detail"]
    # a rule of the domain is a 422 too, its message for a person
    bad = await catalog.post("/projects", json={"code": "Shop!", "name": "S", "gitlab_group": "acme"}, headers=ADMIN)
    assert "project code 'Shop!' is not valid" in assert_problem(bad, 422, "invalid-input")["detail"]


async def test_a_body_over_the_limit_is_a_problem(catalog: httpx.AsyncClient) -> None:
    big = {"code": "shop", "name": "x" * 4096, "gitlab_group": "acme"}
    body = assert_problem(await catalog.post("/projects", json=big, headers=ADMIN), 413, "too-large")
    assert "GANTRY_REQUEST_MAX_BYTES" in body["detail"]


async def test_a_405_names_every_method_its_path_takes(catalog: httpx.AsyncClient) -> None:
    for method, path, allowed in (
        ("PUT", "/projects", "GET, POST"),
        ("DELETE", "/projects", "GET, POST"),
        ("PUT", "/projects/shop/services/web", "DELETE, GET, PATCH"),
        ("POST", "/projects/shop", "DELETE"),
    ):
        answer = await catalog.request(method, path, headers=ADMIN)
        assert_problem(answer, 405, "method-not-allowed")
        assert answer.headers["allow"] == allowed, (method, path)


@pytest.mark.parametrize("service", sorted(APPS))
def test_the_openapi_document_declares_bearer_ids_and_every_error(service: str, tmp_path: Path) -> None:
    document = APPS[service](Settings(home=tmp_path, secret=SECRET)).openapi()
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from `gantry token issue` or the identity provider",
    }
    assert {"Problem", "FieldProblem"} <= set(schemas) and "HTTPValidationError" not in schemas
    ids = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            assert re.fullmatch(r"[a-z]+([A-Z][a-z0-9]*)*", operation["operationId"]), (path, method)
            errors = {int(code): answer for code, answer in operation["responses"].items() if int(code) >= 400}
            for status, answer in errors.items():
                if path != "/readyz":  # its 503 is its own body: what is not ready
                    assert answer["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, status
            if path == "/readyz":
                assert errors[503]["content"] == {"application/json": {}}
            if path in ("/healthz", "/readyz", "/webhooks/gitlab") or path.startswith("/events"):
                continue
            assert operation["security"] == [{"HTTPBearer": []}], (path, method)
            assert {401, 403} <= set(errors), (path, method)
            if "{" in path:
                assert 404 in errors, (path, method)
            if "requestBody" in operation:
                assert {400, 413, 422} <= set(errors), (path, method)
            if method in ("post", "put", "patch", "delete"):
                assert 409 in errors, (path, method)
    assert len(ids) == len(set(ids))
    if service == "catalog":
        assert {"createService", "readServices", "deleteProject"} <= set(ids)


async def test_swagger_ui_is_served_by_the_service_itself(catalog: httpx.AsyncClient) -> None:
    page = await catalog.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "//" not in page.text.replace("<!--", "")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert set(assets) == {"docs/assets/favicon.png", "docs/assets/swagger-ui.css", "docs/assets/swagger-ui-bundle.js"}
    for asset in assets:
        served = await catalog.get(f"/{asset}")
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert 'url: "openapi.json"' in page.text  # relative: /api/catalog/docs loads /api/catalog/openapi.json
    assert (await catalog.get("/docs/assets/..%2Fconsts.py")).status_code == 404


async def test_the_document_names_where_the_caller_reached_the_service(catalog: httpx.AsyncClient) -> None:
    direct = (await catalog.get("/openapi.json")).json()
    assert direct["servers"] == [{"url": "/"}] and direct["info"]["title"] == "Gantry catalog"
    through = (await catalog.get("/openapi.json", headers={"X-Forwarded-Prefix": "/api/catalog"})).json()
    assert through["servers"] == [{"url": "/api/catalog"}]
    odd = (await catalog.get("/openapi.json", headers={"X-Forwarded-Prefix": "javascript:alert(1)"})).json()
    assert odd["servers"] == [{"url": "/"}]


async def test_the_gateway_serves_its_own_docs_under_its_prefix_too(tmp_path: Path) -> None:
    api = gateway_app(Settings(home=tmp_path, secret=SECRET))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gateway") as http:
        own = (await http.get("/api/gateway/openapi.json")).json()
        assert own["servers"] == [{"url": "/api/gateway"}] and own["info"]["title"] == "Gantry gateway"
        assert "/routes" in own["paths"]
        assert (await http.get("/api/gateway/docs")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
