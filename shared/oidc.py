"""Tokens from the organization's identity provider (OpenID Connect), e.g. GitLab.

The issuer's discovery document (``<issuer>/.well-known/openid-configuration``) names its key set
(``jwks_uri``); the keys are fetched without blocking the event loop, cached, and fetched again
when a token names a key id not in the cache (the issuer rotated its keys) — at most once per
``min_refresh`` seconds, so a flood of made-up key ids cannot hammer the issuer — and when the
cache is older than ``max_age`` (a key the issuer withdrew stops being trusted).
A token is accepted when RS256/ES256-signed by one of those keys, from the issuer, for the
audience, and not expired; its claims give the person's roles (``shared.oidc_roles``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt

from shared.auth import Principal, unverified_claims
from shared.errors import GantryError, NotAuthenticated
from shared.logging import get_logger
from shared.oidc_roles import RoleMapping, parse_project_groups, roles_from_claims, split_names, user_from_claims
from shared.settings import Settings

log = get_logger(__name__)
ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30  # clocks of the issuer and of Gantry's hosts differ a little


class IdentityProviderUnavailable(GantryError):
    """The issuer could not be asked for its keys: the token may be fine, Gantry cannot tell."""

    status_code = 503


class KeySet:
    """The issuer's signing keys by key id, fetched by ``fetch`` (the JWKS document)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict[str, Any]]],
        *,
        min_refresh: float,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch, self._min_refresh, self._max_age, self._clock = fetch, min_refresh, max_age, clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last fetch that succeeded
        self._tried_at: float | None = None  # the last fetch at all: the rate limit
        self._failure: IdentityProviderUnavailable | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        if self._stale() or kid not in self._keys:
            await self._refresh(kid)
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age

    async def _refresh(self, kid: str | None) -> None:
        async with self._lock:  # one fetch for every request waiting on the same key
            if not self._stale() and kid in self._keys:
                return
            now = self._clock()
            if self._tried_at is None or now - self._tried_at >= self._min_refresh:
                self._tried_at = now
                try:
                    self._keys, self._fetched_at, self._failure = keys_by_id(await self._fetch()), now, None
                except IdentityProviderUnavailable as exc:
                    self._failure = exc
                    if self._fetched_at is not None:
                        log.warning("identity provider unreachable: its cached keys stay in use", error=exc.detail)
            if self._failure is not None and self._fetched_at is None:
                raise self._failure


def keys_by_id(document: dict[str, Any]) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS document (keys of other algorithms or for encryption skipped)."""
    keys: dict[str | None, jwt.PyJWK] = {}
    for data in document.get("keys", []):
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(data)
        except (jwt.PyJWTError, ValueError, TypeError):  # a key Gantry cannot use is not a reason to fail
            continue
        if key.algorithm_name in ALGORITHMS:
            keys[data.get("kid")] = key
    return keys


class OidcVerifier:
    """Verifies the issuer's tokens and maps their claims to Gantry roles."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        mapping: RoleMapping,
        *,
        min_refresh: float = 30.0,
        max_age: float = 3600.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer, self.audience, self.mapping, self.timeout = issuer, audience, mapping, timeout
        self.keys = KeySet(self._fetch_jwks, min_refresh=min_refresh, max_age=max_age, clock=clock)
        self._jwks_uri: str | None = None

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"the bearer token is not a JWT ({exc})") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise NotAuthenticated(f"a token from {self.issuer} must be signed with RS256 or ES256, not {algorithm}")
        issuer = unverified_claims(token).get("iss")
        if issuer != self.issuer:  # checked before any fetch: a stranger's token costs the issuer nothing
            raise NotAuthenticated(f"the token was issued by {issuer!r}; Gantry accepts tokens from {self.issuer}")
        key = await self.keys.key(kid)
        if key is None or key.algorithm_name != algorithm:
            raise NotAuthenticated(
                f"the token is signed with key {kid!r} ({algorithm}), which {self.issuer} does not publish: "
                "sign in again to get a current token"
            )
        claims = self._decode(token, key)
        return Principal(user=user_from_claims(claims, self.mapping), roles=roles_from_claims(claims, self.mapping))

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthenticated(f"the token from {self.issuer} has expired: sign in again") from exc
        except jwt.InvalidAudienceError as exc:
            raise NotAuthenticated(
                f"the token is not meant for Gantry (its audience is not {self.audience!r}, GANTRY_OIDC_AUDIENCE): "
                "get one from the application Gantry is registered as"
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"the token from {self.issuer} is not valid ({exc})") from exc
        return claims

    async def _fetch_jwks(self) -> dict[str, Any]:
        if self._jwks_uri is None:
            discovery = await self._get_json(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
            if discovery.get("issuer") != self.issuer or not isinstance(discovery.get("jwks_uri"), str):
                raise IdentityProviderUnavailable(
                    f"the discovery document of {self.issuer} names the issuer {discovery.get('issuer')!r} "
                    "and no usable jwks_uri: GANTRY_OIDC_ISSUER must be the issuer exactly as the provider names it"
                )
            self._jwks_uri = discovery["jwks_uri"]
        return await self._get_json(self._jwks_uri)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                response = await http.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityProviderUnavailable(
                f"the identity provider {self.issuer} did not answer {url} ({type(exc).__name__}: {exc}): "
                "try again shortly, or use a token from `gantry token issue`"
            ) from exc
        if not isinstance(document, dict):
            raise IdentityProviderUnavailable(f"the identity provider {self.issuer} answered {url} with no JSON object")
        return document


def mapping_from_settings(settings: Settings) -> RoleMapping:
    return RoleMapping(
        user_claim=settings.oidc_user_claim,
        owner_claims=split_names(settings.oidc_owner_claims),
        member_claims=split_names(settings.oidc_member_claims),
        groups_claims=split_names(settings.oidc_groups_claims),
        membership_makes_member=settings.oidc_membership_makes_member,
        org_admin_groups=frozenset(group.strip("/") for group in split_names(settings.oidc_org_admin_groups)),
        deploy_admin_groups=frozenset(group.strip("/") for group in split_names(settings.oidc_deploy_admin_groups)),
        project_groups=parse_project_groups(settings.oidc_project_groups),
        group_root=settings.oidc_group_root,
    )


def verifier_from_settings(settings: Settings) -> OidcVerifier | None:
    """The identity provider's verifier, or None when GANTRY_OIDC_ISSUER is unset (Gantry's own tokens only)."""
    if not settings.oidc_issuer or not settings.oidc_audience:
        return None
    return OidcVerifier(
        settings.oidc_issuer,
        settings.oidc_audience,
        mapping_from_settings(settings),
        min_refresh=settings.oidc_jwks_min_refresh_seconds,
        max_age=settings.oidc_jwks_max_age_seconds,
    )
