"""Release's rules for branches, disabled services, un-release and environments, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.release import domain
from shared.errors import Conflict, InvalidInput


@dataclass
class V:
    version: str
    ref: str
    tag: bool = False


def test_ref_patterns_default_to_the_default_branch_and_are_validated():
    assert domain.validate_ref_patterns(None) == ("main",)
    assert domain.validate_ref_patterns(["main", "release/*", "main"]) == ("main", "release/*")
    assert domain.validate_ref_patterns([]) == ()
    for bad, message in [
        ("", "is not valid"),
        ("feature x", "no spaces"),
        ("refs/heads/main", "give the branch name as pipelines report it, e.g. 'main'"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            domain.validate_ref_patterns([bad])
    with pytest.raises(InvalidInput, match="20 at most"):
        domain.validate_ref_patterns([f"b{i}" for i in range(21)])


def test_auto_release_on_must_be_able_to_take_a_version():
    domain.validate_auto_release(True, ("main",), False)
    domain.validate_auto_release(True, (), True)
    domain.validate_auto_release(False, (), False)
    with pytest.raises(InvalidInput, match="would release nothing"):
        domain.validate_auto_release(True, (), False)


@pytest.mark.parametrize(
    ("version", "refs", "tags", "taken"),
    [
        (V("1", "main"), ("main",), False, True),
        (V("1", "feature/login"), ("main",), False, False),
        (V("1", "release/1.2"), ("main", "release/*"), False, True),
        (V("1", "release/1.2/hotfix"), ("release/*",), False, True),  # '*' crosses '/'
        (V("1", "Main"), ("main",), False, False),  # case matters, as in git
        (V("v1.0", "v1.0", tag=True), ("main",), False, False),
        (V("v1.0", "v1.0", tag=True), ("main",), True, True),
        (V("v1.0", "v1.0", tag=True), ("v*",), False, False),  # tags follow the switch, not the patterns
    ],
)
def test_only_matching_versions_are_auto_released(version, refs, tags, taken):
    # "A feature-branch pipeline replaced what ran in staging": auto-release takes matching refs only.
    assert domain.ref_matches(version, refs, tags) is taken
    skip = domain.auto_release_skip(version, enabled=True, service_enabled=True, refs=refs, tags=tags)
    assert (skip is None) is taken


def test_auto_release_skip_says_why():
    main, feature, tag = V("1", "main"), V("2", "feature/x"), V("v3", "v3", tag=True)
    on = {"enabled": True, "service_enabled": True, "refs": ("main",), "tags": False}
    assert domain.auto_release_skip(main, **on) is None
    assert domain.auto_release_skip(main, **(on | {"enabled": False})) == "auto-release is off"
    assert domain.auto_release_skip(main, **(on | {"service_enabled": False})) == "the service is disabled"
    assert domain.auto_release_skip(feature, **on) == "its branch 'feature/x' matches none of main"
    assert domain.auto_release_skip(tag, **on) == "it comes from tag 'v3' and auto-release takes no tags"


def test_a_new_environment_gets_the_newest_matching_version_or_says_why_none():
    newest_first = [V("3", "feature/x"), V("2", "main"), V("1", "main")]
    chosen, why = domain.choose_initial_version(newest_first, ("main",), False)
    assert chosen is newest_first[1]
    assert why == "version '2' goes there: the newest from a branch matching main"

    chosen, why = domain.choose_initial_version(newest_first, ("release/*",), True)
    assert chosen is None
    assert "none of the 3 versions is from a branch matching release/* or a tag" in why
    assert "POST …/releases/{environment}/versions" in why

    chosen, why = domain.choose_initial_version([], ("main",), False)
    assert chosen is None and why.startswith("no version goes there yet: the service has none")


def test_a_disabled_service_is_not_released():
    domain.refuse_disabled("shop", "web", enabled=True)
    with pytest.raises(Conflict, match="service 'web' is disabled") as refused:
        domain.refuse_disabled("shop", "web", enabled=False)
    assert 'PATCH /api/catalog/projects/shop/services/web {"enabled": true}' in refused.value.detail


def test_a_service_runs_until_removed_and_is_unreleased_only_then():
    assert [s for s in ("rendered", "progressing", "succeeded", "failed", "removed") if domain.runs_after(s)] == [
        "rendered",
        "progressing",
        "succeeded",
        "failed",
    ]
    domain.refuse_withdraw_while_running("shop", "web", "staging", running=False)
    with pytest.raises(Conflict, match="runs in environment 'staging': undeploy it first"):
        domain.refuse_withdraw_while_running("shop", "web", "staging", running=True)


def test_an_environment_in_use_is_not_deleted_and_the_refusal_names_what_uses_it():
    domain.refuse_environment_delete("staging", released=[], running=[])
    with pytest.raises(Conflict) as refused:
        domain.refuse_environment_delete("staging", released=["shop/web", "shop/api"], running=["shop/web"])
    assert refused.value.detail.startswith("environment 'staging' is still in use; running there: shop/web")
    assert "released to it: shop/web, shop/api" in refused.value.detail


def test_ingress_settings_are_kubernetes_names():
    assert domain.validate_ingress_class("nginx") == "nginx"
    assert domain.validate_ingress_class("") is None
    assert domain.validate_ingress_host("*.staging.example.com") == "*.staging.example.com"
    assert domain.validate_ingress_host(None) is None
    with pytest.raises(InvalidInput, match="is not an IngressClass name"):
        domain.validate_ingress_class("Nginx")
    for host in ("https://shop.example.com", "shop.example.com:8080", "Shop.example.com", "a..b", "x.*.com"):
        with pytest.raises(InvalidInput, match="is not a host name"):
            domain.validate_ingress_host(host)
