"""Gantry roles from an identity provider's claims, GitLab's by default: a group's Owner or
Maintainer owns its project, its Developer is a member, named groups make organization roles."""

from __future__ import annotations

import pytest

from shared.oidc_roles import RoleMapping, parse_project_groups, roles_from_claims, user_from_claims

OWNER, MAINTAINER, DEVELOPER = (
    f"https://gitlab.org/claims/groups/{level}" for level in ("owner", "maintainer", "developer")
)


def test_gitlab_levels_make_project_roles_by_the_groups_last_segment():
    claims = {OWNER: ["acme/shop"], MAINTAINER: ["acme/pay"], DEVELOPER: ["acme/search", "acme/Ops"]}
    assert roles_from_claims(claims, RoleMapping()) == {
        "shop:project-owner",
        "pay:project-owner",
        "search:project-member",
        "ops:project-member",
    }


def test_plain_membership_gives_no_project_role_unless_the_mapping_says_so():
    claims = {"groups_direct": ["acme/shop"], "groups": ["acme", "acme/shop"]}
    assert roles_from_claims(claims, RoleMapping()) == frozenset()  # a Guest is a member too
    assert roles_from_claims(claims, RoleMapping(membership_makes_member=True)) == {
        "acme:project-member",
        "shop:project-member",
    }


def test_named_groups_make_organization_roles_whatever_the_level():
    mapping = RoleMapping(org_admin_groups=frozenset({"acme/admins"}), deploy_admin_groups=frozenset({"acme/sre"}))
    assert roles_from_claims({"groups_direct": ["acme/admins"]}, mapping) == {"org-admin"}
    assert roles_from_claims({DEVELOPER: ["acme/sre"]}, mapping) == {"deploy-admin", "sre:project-member"}
    assert roles_from_claims({"groups": ["acme/admins-not"]}, mapping) == frozenset()


def test_under_a_group_root_only_its_subgroups_stand_for_projects():
    """On a GitLab where anyone may create groups, `other/shop` must not own Gantry's `shop`."""
    mapping = RoleMapping(group_root="acme")
    claims = {OWNER: ["acme/shop", "other/shop", "acme"], DEVELOPER: ["acme/team/pay"]}
    assert roles_from_claims(claims, mapping) == {"shop:project-owner", "pay:project-member"}


def test_explicit_project_groups_map_exactly_and_inherit_from_ancestor_groups():
    mapping = RoleMapping(project_groups=parse_project_groups("shop=acme/retail/shop-front, pay=acme/payments"))
    assert roles_from_claims({OWNER: ["acme/retail/shop-front"]}, mapping) == {"shop:project-owner"}
    assert roles_from_claims({OWNER: ["acme"]}, mapping) == {"shop:project-owner", "pay:project-owner"}
    assert roles_from_claims({DEVELOPER: ["acme/retail"], OWNER: ["other/pay"]}, mapping) == {"shop:project-member"}
    assert roles_from_claims({OWNER: ["acme/pay"]}, mapping) == frozenset()  # the last segment is not used


def test_claims_of_the_wrong_shape_and_codes_gantry_cannot_hold_are_ignored():
    claims = {OWNER: "acme/shop", DEVELOPER: [42, None, "", "acme/Not A Code"], "groups": {"acme": 1}}
    assert roles_from_claims(claims, RoleMapping()) == {"shop:project-owner"}


def test_the_user_is_the_user_claim_else_the_subject():
    assert user_from_claims({"sub": "42", "preferred_username": "olga"}, RoleMapping()) == "olga"
    assert user_from_claims({"sub": "42"}, RoleMapping()) == "42"
    assert user_from_claims({"sub": "42", "email": "o@acme.test"}, RoleMapping(user_claim="email")) == "o@acme.test"


def test_project_groups_setting_is_checked():
    assert parse_project_groups(" shop = acme/shop/ ,") == (("shop", "acme/shop"),)
    for bad in ("shop", "Shop=acme/shop", "shop=", "=acme/shop"):
        with pytest.raises(ValueError, match="GANTRY_OIDC_PROJECT_GROUPS"):
            parse_project_groups(bad)
