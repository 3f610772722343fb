"""Bearer tokens and the guide's roles.

Two kinds of token: Gantry's own (JWT, HS256, signed with the installation secret, issued by
``gantry token issue``) and, when an identity provider is configured, its tokens (RS256/ES256,
verified by ``shared.oidc``). The token's header says which: HS* is Gantry's own.

Roles: ``org-admin`` (everything), ``deploy-admin`` (organization level: deploy, resources),
``<project>:project-owner|source-code-admin|project-member`` (project level).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from shared.errors import Forbidden, InvalidInput, NotAuthenticated

PROJECT_ROLES = ("project-owner", "source-code-admin", "project-member")
_ROLE = re.compile(r"^(org-admin|deploy-admin|[a-z0-9][a-z0-9_.-]*:(project-owner|source-code-admin|project-member))$")
ISSUER = "gantry"


@dataclass(frozen=True)
class Principal:
    user: str
    roles: frozenset[str]

    def is_org_admin(self) -> bool:
        return "org-admin" in self.roles

    def require_org(self, *roles: str) -> None:
        if self.is_org_admin() or any(role in self.roles for role in roles):
            return
        raise Forbidden(f"{self.user} needs one of the roles {', '.join(('org-admin', *roles))}")

    def reads_every_project(self) -> bool:
        """Org admins and deploy admins read every project's services, versions and pipelines:
        the deploy admin's work starts from the organization's list of services."""
        return self.is_org_admin() or "deploy-admin" in self.roles

    def can_read_project(self, project: str) -> bool:
        return self.reads_every_project() or any(f"{project}:{role}" in self.roles for role in PROJECT_ROLES)

    def require_project_read(self, project: str) -> None:
        """Reading (never writing) a project: any of its roles, or an organization role."""
        if not self.can_read_project(project):
            raise Forbidden(
                f"{self.user} needs a role in project {project!r} "
                f"({', '.join(f'{project}:{role}' for role in PROJECT_ROLES)}), or org-admin or deploy-admin"
            )

    def require_project(self, project: str, *roles: str) -> None:
        if self.is_org_admin() or any(f"{project}:{role}" in self.roles for role in roles):
            return
        wanted = ", ".join(f"{project}:{role}" for role in roles)
        raise Forbidden(f"{self.user} needs one of the roles {wanted} (or org-admin)")


class TokenVerifier(Protocol):
    """Verifies an identity provider's tokens (``shared.oidc.OidcVerifier``)."""

    issuer: str

    async def verify(self, token: str) -> Principal: ...


def is_role(role: str) -> bool:
    return bool(_ROLE.match(role))


def validate_role(role: str) -> str:
    if not is_role(role):
        raise InvalidInput(
            f"unknown role {role!r}: use org-admin, deploy-admin or "
            "<project>:project-owner|source-code-admin|project-member"
        )
    return role


def issue_token(secret: str, user: str, roles: list[str], ttl_seconds: int = 12 * 3600) -> str:
    if not user:
        raise InvalidInput("a token needs a user name")
    if ttl_seconds <= 0:
        raise InvalidInput(f"a token must be valid for some time, not {ttl_seconds} s: give a positive duration")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": user,
        "roles": [validate_role(role) for role in roles],
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError as exc:
        raise NotAuthenticated("the token has expired: issue a new one with `gantry token issue`") from exc
    except jwt.InvalidTokenError as exc:
        raise NotAuthenticated(f"the token is not valid ({exc}): issue one with `gantry token issue`") from exc
    return Principal(user=str(claims["sub"]), roles=frozenset(claims.get("roles", [])))


async def parse_authorization(secret: str, header: str | None, oidc: TokenVerifier | None = None) -> Principal:
    if not header or not header.lower().startswith("bearer "):
        raise NotAuthenticated(
            "missing 'Authorization: Bearer <token>': issue a token with `gantry token issue --user NAME --role ROLE`"
        )
    return await verify_bearer(secret, header.split(" ", 1)[1].strip(), oidc)


async def verify_bearer(secret: str, token: str, oidc: TokenVerifier | None = None) -> Principal:
    """Gantry's own token (HS256) or, when one is configured, the identity provider's."""
    try:
        algorithm = str(jwt.get_unverified_header(token).get("alg", ""))
    except jwt.InvalidTokenError as exc:
        raise NotAuthenticated(f"the bearer token is not a JWT ({exc}): send a token, not a password") from exc
    if algorithm.startswith("HS"):
        return verify_token(secret, token)
    if oidc is None:
        raise NotAuthenticated(
            f"this token is signed with {algorithm} by {unverified_claims(token).get('iss')!r}, and Gantry trusts "
            "no identity provider: set GANTRY_OIDC_ISSUER and GANTRY_OIDC_AUDIENCE, or use `gantry token issue`"
        )
    return await oidc.verify(token)


def unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims read WITHOUT checking them: only to say what a refused token was."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims


def webhook_secret(installation_secret: str, scm_project_id: str) -> str:
    """A repository's webhook secret, from the GitLab project id every hook carries (and which
    survives renames): catalog registers it, the webhook door checks it before it stores anything,
    even for a repository whose service is not known yet; no event ever carries it."""
    message = f"gitlab-webhook:{scm_project_id}".encode()
    return hmac.new(installation_secret.encode(), message, hashlib.sha256).hexdigest()
