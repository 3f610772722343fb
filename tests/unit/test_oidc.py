"""Tokens from an identity provider, checked against a stand-in issuer on loopback (a real HTTP
server with keys made here): valid RS256 and ES256 tokens, expired, wrong audience, wrong issuer,
unknown key, a rotated key, the issuer down, and Gantry's own tokens alongside."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.auth import Principal, issue_token, parse_authorization
from shared.errors import NotAuthenticated
from shared.oidc import IdentityProviderUnavailable, OidcVerifier, verifier_from_settings
from shared.oidc_roles import RoleMapping
from shared.settings import Settings
from tests.oidc_issuer import AUDIENCE, StandInIssuer
from tests.support import SECRET, Clock

OWNER_CLAIM = "https://gitlab.org/claims/groups/owner"
KEYS = "/oauth/discovery/keys"


@pytest.fixture
def issuer() -> Iterator[StandInIssuer]:
    with StandInIssuer() as stand_in:
        yield stand_in


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(issuer: StandInIssuer, clock: Clock) -> OidcVerifier:
    mapping = RoleMapping(org_admin_groups=frozenset({"acme/gantry-admins"}))
    return OidcVerifier(issuer.url, AUDIENCE, mapping, min_refresh=30, max_age=3600, clock=clock)


def hs256(claims: dict, key: bytes, kid: str) -> str:
    """An HS256 token signed by hand (pyjwt rightly refuses to use a public key as an HMAC secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}.{part(json.dumps(claims).encode())}"
    )
    return f"{signing_input}.{part(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_a_valid_token_is_a_person_with_the_roles_of_their_groups(issuer, verifier, algorithm):
    kid = issuer.new_key(algorithm)
    token = issuer.token(
        kid, preferred_username="olga", groups_direct=["acme/gantry-admins"], **{OWNER_CLAIM: ["acme/shop"]}
    )
    principal = await parse_authorization(SECRET, bearer(token), verifier)
    assert principal == Principal("olga", frozenset({"org-admin", "shop:project-owner"}))
    assert issuer.requests["/.well-known/openid-configuration"] == 1 and issuer.requests[KEYS] == 1


async def test_keys_are_cached_and_gantrys_own_tokens_still_work(issuer, verifier):
    kid = issuer.new_key()
    for name in ("ada", "bob", "cy"):
        assert (
            await parse_authorization(SECRET, bearer(issuer.token(kid, preferred_username=name)), verifier)
        ).user == name
    assert issuer.requests[KEYS] == 1
    own = await parse_authorization(SECRET, bearer(issue_token(SECRET, "root", ["org-admin"])), verifier)
    assert own == Principal("root", frozenset({"org-admin"}))
    anonymous = await parse_authorization(SECRET, bearer(issuer.token(kid, preferred_username=None)), verifier)
    assert anonymous == Principal("42", frozenset())  # no user claim: the subject; no groups: no roles


async def test_an_expired_token_is_refused(issuer, verifier):
    kid = issuer.new_key()
    expired = issuer.token(kid, iat=int(time.time()) - 600, exp=int(time.time()) - 120)
    with pytest.raises(NotAuthenticated, match="has expired: sign in again") as refused:
        await parse_authorization(SECRET, bearer(expired), verifier)
    assert refused.value.status_code == 401


async def test_a_token_for_another_application_is_refused(issuer, verifier):
    kid = issuer.new_key()
    with pytest.raises(NotAuthenticated, match="not meant for Gantry"):
        await verifier.verify(issuer.token(kid, aud="some-other-application"))


async def test_a_token_from_another_issuer_is_refused_before_anything_is_fetched(issuer, verifier):
    kid = issuer.new_key()
    with pytest.raises(NotAuthenticated, match="issued by 'https://evil.example'"):
        await verifier.verify(issuer.token(kid, iss="https://evil.example"))
    assert issuer.requests[KEYS] == 0


async def test_a_key_the_issuer_does_not_publish_is_refused(issuer, verifier):
    issuer.new_key()
    secret_kid = issuer.new_key(publish=False)
    with pytest.raises(NotAuthenticated, match="does not publish") as refused:
        await verifier.verify(issuer.token(secret_kid))
    assert refused.value.status_code == 401


async def test_a_rotated_key_is_fetched_and_a_flood_of_unknown_keys_fetches_once(issuer, verifier, clock):
    old = issuer.new_key()
    assert (await verifier.verify(issuer.token(old))).user == "42"
    issuer.published = [issuer.new_key("ES256")]  # the issuer rotates: only the new key is published
    rotated = issuer.token(issuer.published[0], preferred_username="olga")
    with pytest.raises(NotAuthenticated, match="does not publish"):  # keys fetched a moment ago: not yet again
        await verifier.verify(rotated)
    assert issuer.requests[KEYS] == 1
    clock.now += 30  # the refresh limit has passed: the unknown key id makes Gantry fetch the keys again
    assert (await verifier.verify(rotated)).user == "olga"
    assert issuer.requests[KEYS] == 2
    with pytest.raises(NotAuthenticated, match="does not publish"):  # the withdrawn key is no longer trusted
        await verifier.verify(issuer.token(old))
    clock.now += 30
    forged = [issuer.token(issuer.new_key("ES256", publish=False)) for _ in range(20)]
    results = await asyncio.gather(*(verifier.verify(token) for token in forged), return_exceptions=True)
    assert all(isinstance(result, NotAuthenticated) for result in results)
    assert issuer.requests[KEYS] == 3  # one refresh for the whole flood of unknown key ids


async def test_the_issuer_down_is_a_503_naming_it_and_cached_keys_outlive_it(issuer, verifier, clock):
    kid = issuer.new_key()
    token = issuer.token(kid)
    assert (await verifier.verify(token)).user == "42"
    issuer.stop()
    clock.now += 7200  # the cache is stale, the issuer cannot be asked: the keys it last published stay
    assert (await verifier.verify(token)).user == "42"
    fresh = OidcVerifier(issuer.url, AUDIENCE, RoleMapping())
    with pytest.raises(IdentityProviderUnavailable, match=f"identity provider {issuer.url} did not answer") as down:
        await fresh.verify(token)
    assert down.value.status_code == 503


async def test_an_identity_providers_token_without_an_issuer_configured_is_a_clear_401(issuer):
    token = issuer.token(issuer.new_key())
    with pytest.raises(NotAuthenticated, match=f"by '{issuer.url}'.*set GANTRY_OIDC_ISSUER"):
        await parse_authorization(SECRET, bearer(token), None)
    assert issuer.requests[KEYS] == 0


async def test_tokens_signed_another_way_are_refused(issuer, verifier):
    """The provider's public key as an HMAC secret, and unsigned tokens: the old algorithm-confusion tricks."""
    kid = issuer.new_key()
    public_pem = (
        issuer.keys[kid][1]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "eve", "exp": int(time.time()) + 300, "roles": ["org-admin"]}
    hmac_forgery = hs256(claims, public_pem, kid)
    with pytest.raises(NotAuthenticated, match="not valid"):
        await parse_authorization(SECRET, bearer(hmac_forgery), verifier)
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    with pytest.raises(NotAuthenticated, match="RS256 or ES256, not none"):
        await parse_authorization(SECRET, bearer(unsigned), verifier)


def test_the_settings_make_the_verifier_and_refuse_what_cannot_work(tmp_path):
    assert verifier_from_settings(Settings(home=tmp_path)) is None
    settings = Settings(
        home=tmp_path,
        oidc_issuer="https://gitlab.example.com",
        oidc_audience=AUDIENCE,
        oidc_org_admin_groups="acme/admins, acme/sre",
        oidc_project_groups="shop=acme/shop",
    )
    verifier = verifier_from_settings(settings)
    assert verifier is not None and verifier.audience == AUDIENCE
    assert verifier.mapping.org_admin_groups == {"acme/admins", "acme/sre"}
    assert verifier.mapping.project_groups == (("shop", "acme/shop"),)
    with pytest.raises(ValueError, match="GANTRY_OIDC_AUDIENCE"):
        Settings(home=tmp_path, oidc_issuer="https://gitlab.example.com")
    with pytest.raises(ValueError, match="https://"):
        Settings(home=tmp_path, oidc_issuer="http://gitlab.example.com", oidc_audience="x")
    with pytest.raises(ValueError, match="GANTRY_OIDC_PROJECT_GROUPS"):
        Settings(home=tmp_path, oidc_project_groups="acme/shop")
