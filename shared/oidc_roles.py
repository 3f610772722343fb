"""Gantry roles from an identity provider's claims: a pure mapping, set by the settings.

The default reads GitLab as the provider. GitLab lists the groups a person is a direct member of
with their level (``https://gitlab.org/claims/groups/owner|maintainer|developer``) and the groups
they belong to at all (``groups``, ``groups_direct``). A group's Owner or Maintainer is the owner of
the Gantry project that group stands for, its Developer a member; the organization roles go to the
members of named groups.

Which project a group stands for, without asking the catalog on every request:
- with ``project_groups`` (``shop=acme/shop``): exactly those groups, and a role in an ancestor
  group holds in its subgroups, as in GitLab (an Owner of ``acme`` owns ``acme/shop``);
- else the group path's last segment is the project code (``acme/shop`` -> ``shop``), only under
  ``group_root`` when it is set (``acme``: then ``other/shop`` stands for nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.auth import is_role

GITLAB_GROUP_CLAIM = "https://gitlab.org/claims/groups/{level}"


@dataclass(frozen=True)
class RoleMapping:
    user_claim: str = "preferred_username"  # who the person is; ``sub`` when the claim is absent
    owner_claims: tuple[str, ...] = (
        GITLAB_GROUP_CLAIM.format(level="owner"),
        GITLAB_GROUP_CLAIM.format(level="maintainer"),
    )
    member_claims: tuple[str, ...] = (GITLAB_GROUP_CLAIM.format(level="developer"),)
    groups_claims: tuple[str, ...] = ("groups", "groups_direct")
    membership_makes_member: bool = False  # plain membership (any level, Guest too) -> project-member
    org_admin_groups: frozenset[str] = frozenset()
    deploy_admin_groups: frozenset[str] = frozenset()
    project_groups: tuple[tuple[str, str], ...] = ()  # (project code, group path)
    group_root: str | None = None


def parse_project_groups(value: str) -> tuple[tuple[str, str], ...]:
    """``shop=acme/shop, pay=acme/payments`` -> (project code, group path) pairs."""
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        project, _, group = (side.strip() for side in item.partition("="))
        if not is_role(f"{project}:project-member") or not group.strip("/"):
            raise ValueError(
                f"GANTRY_OIDC_PROJECT_GROUPS: {item!r} is not <project code>=<GitLab group path> "
                "(example: shop=acme/shop,pay=acme/payments)"
            )
        pairs.append((project, group.strip("/")))
    return tuple(pairs)


def split_names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


def claimed_groups(claims: Mapping[str, Any], names: Iterable[str]) -> set[str]:
    """Group paths listed under any of ``names`` (a list of strings, or one string)."""
    groups: set[str] = set()
    for name in names:
        value = claims.get(name)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        groups.update(item.strip("/") for item in values if isinstance(item, str) and item.strip("/"))
    return groups


def projects_of_group(group: str, mapping: RoleMapping) -> set[str]:
    """The Gantry projects a role in ``group`` reaches (see the module's docstring)."""
    group = group.lower()
    if mapping.project_groups:
        return {
            project
            for project, path in mapping.project_groups
            if path.lower() == group or path.lower().startswith(group + "/")
        }
    root = (mapping.group_root or "").strip("/").lower()
    if root and not group.startswith(root + "/"):
        return set()
    code = group.rsplit("/", 1)[-1]
    return {code} if is_role(f"{code}:project-member") else set()


def roles_from_claims(claims: Mapping[str, Any], mapping: RoleMapping) -> frozenset[str]:
    """The Gantry roles a verified token's claims give, by ``mapping``."""
    owners = claimed_groups(claims, mapping.owner_claims)
    members = claimed_groups(claims, mapping.member_claims)
    memberships = claimed_groups(claims, mapping.groups_claims) | owners | members
    roles = {f"{project}:project-owner" for group in owners for project in projects_of_group(group, mapping)}
    member_groups = members | memberships if mapping.membership_makes_member else members
    roles |= {f"{project}:project-member" for group in member_groups for project in projects_of_group(group, mapping)}
    if memberships & mapping.org_admin_groups:
        roles.add("org-admin")
    if memberships & mapping.deploy_admin_groups:
        roles.add("deploy-admin")
    return frozenset(roles)


def user_from_claims(claims: Mapping[str, Any], mapping: RoleMapping) -> str:
    """The person's name in Gantry (logs, records): the user claim, else the subject."""
    name = claims.get(mapping.user_claim)
    return name if isinstance(name, str) and name else str(claims["sub"])
