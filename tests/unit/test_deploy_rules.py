"""Deploy's rules for the services it knows and the requests it takes, as pure functions.

Quoted from the guide (seed/README.md) where it says them; the rest are the API's habits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.deploy import domain
from shared.errors import Conflict, InvalidInput, NotFound
from tests.unit.test_rules import FACTS


def test_a_disabled_service_is_not_deployed():
    # "A disabled service keeps its versions but is not released or deployed."
    domain.require_enabled("shop", "web", "enabled")
    with pytest.raises(Conflict, match="shop/web is disabled, and a disabled service is not deployed") as refused:
        domain.require_enabled("shop", "web", "disabled")
    assert 'PATCH /api/catalog/projects/shop/services/web with {"enabled": true}' in refused.value.detail
    with pytest.raises(Conflict, match="was deleted"):
        domain.require_enabled("shop", "web", "deleted")


def test_auto_deploy_skips_a_disabled_service():
    assert domain.auto_deploy_replicas(FACTS) == 3
    assert domain.auto_deploy_replicas(replace(FACTS, service_enabled=False)) is None


def test_a_deployment_names_an_environment_that_exists():
    domain.require_known_environment("prod", announced=True, released_there=False)
    domain.require_known_environment("prod", announced=False, released_there=True)  # an older install
    with pytest.raises(NotFound, match="environment 'prod' does not exist: see GET /api/release/environments"):
        domain.require_known_environment("prod", announced=False, released_there=False)


def test_latest_is_the_version_released_last():
    assert domain.resolve_version("1.0.0", "2.0.0", "shop/web", "dev") == "1.0.0"
    assert domain.resolve_version("latest", "2.0.0", "shop/web", "dev") == "2.0.0"
    with pytest.raises(Conflict, match="no version of shop/web is released to dev: release one there first"):
        domain.resolve_version("latest", None, "shop/web", "dev")


def test_an_idempotency_key_names_one_request():
    domain.check_resent("k-1", "abc", "abc")
    domain.check_resent("k-1", None, "abc")  # made before requests were fingerprinted
    with pytest.raises(InvalidInput, match="'k-1' was first sent with a different request"):
        domain.check_resent("k-1", "abc", "def")


def test_rendered_manifests_have_no_pod_counts():
    assert domain.counts_known("succeeded") and domain.counts_known("progressing")
    assert not domain.counts_known("rendered")
