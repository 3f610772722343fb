"""The guide's rules that need stored facts, as the pure functions the handlers call.

Each test quotes the rule it enforces (shared/seed/README.md, the guide's English summary)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from services.catalog import domain as catalog
from services.deploy import domain as deploy
from services.release import domain as release
from shared.errors import Conflict, InvalidInput


def test_a_service_is_released_to_an_environment_once():
    # "An environment the service is already released to cannot be released to again."
    release.refuse_second_release("shop", "web", "staging", already_released=False)
    with pytest.raises(Conflict, match="already released to environment 'staging'") as refused:
        release.refuse_second_release("shop", "web", "staging", already_released=True)
    assert "/api/release/projects/shop/services/web/releases/staging/versions" in refused.value.detail


def test_a_canary_runs_beside_a_stable_deployment():
    # "Grey (canary) deployment verifies a version before it is converted into the formal deployment."
    deploy.require_stable_for_canary("shop/web to dev", track="canary", stable_runs=True)
    deploy.require_stable_for_canary("shop/web to dev", track="stable", stable_runs=False)
    with pytest.raises(Conflict, match='has none yet: deploy with "strategy": "rolling" first'):
        deploy.require_stable_for_canary("shop/web to dev", track="canary", stable_runs=False)


FACTS = deploy.AutoDeployFacts(
    rule_enabled=True,
    manually_deployed=True,
    last_stable_replicas=3,
    running_version="1.0",
    running_state="succeeded",
    released_version="1.1",
)


def test_auto_deploy_follows_a_first_manual_deployment_with_its_replicas():
    # "With auto-deploy set, a released version needs no manual deployment" — once a person made the
    # first one: "The first deployment needs the resources filled in by hand".
    assert deploy.auto_deploy_replicas(FACTS) == 3


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"rule_enabled": False}, "auto-deploy is off"),
        ({"manually_deployed": False}, "no first manual deployment"),
        ({"last_stable_replicas": None}, "nothing runs on the stable track"),
        ({"released_version": "1.0"}, "the version already runs"),
    ],
)
def test_auto_deploy_stays_still(change, why):
    assert deploy.auto_deploy_replicas(replace(FACTS, **change)) is None, why


def test_auto_deploy_retries_a_version_whose_rollout_failed():
    failed = replace(FACTS, released_version="1.0", running_state="failed")
    assert deploy.auto_deploy_replicas(failed) == 3


@pytest.mark.parametrize("replicas", [0, -1, deploy.MAX_REPLICAS + 1])
def test_the_desired_count_cannot_be_0(replicas):
    # "Desired count = Kubernetes pod count … The desired count cannot be 0."
    with pytest.raises(InvalidInput):
        deploy.validate_replicas(replicas)
    assert deploy.validate_replicas(deploy.MIN_REPLICAS) == 1


def test_a_service_code_and_the_names_derived_from_it_are_free():
    # "Service code … unique per project"; its derived names (in the project, Kubernetes across projects) too.
    assert catalog.clash("shop", "web", None) is None
    taken = SimpleNamespace(project="shop", code="web", slug="web")
    assert "already used in project 'shop'" in catalog.clash("shop", "web", taken)
    assert "derives the name 'web'" in catalog.clash(
        "shop", "web.", SimpleNamespace(project="shop", code="w-e-b", slug="web")
    )
    other = SimpleNamespace(project="shop-web", code="api", slug="api")
    assert "clashes with service 'api' of project 'shop-web'" in catalog.clash("shop", "web-api", other)
    assert "keeps for canary deployments" in catalog.clash("shop", "web canary", None)
