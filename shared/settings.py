"""Gantry's settings: environment variables with the ``GANTRY_`` prefix, validated at start-up.

Every setting has an embedded default, so ``gantry up`` runs with none set. A bad value stops
the process at once with a message that names the variable and says how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.oidc_roles import GITLAB_GROUP_CLAIM, parse_project_groups
from shared.sealing import SealingError, parse_key, parse_keys

SERVICES = ("gateway", "catalog", "versioning", "release", "deploy")
_BOOTSTRAP = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


# Settings that hold secrets: a value copied unchanged from the examples is refused at start.
PLACEHOLDER_CHECKED = {
    "secret": "a value of your own, the same for every service (`openssl rand -hex 32`)",
    "database_url": "the database user's real password",
    "gitlab_token": "a GitLab access token",
    "metrics_token": "a random token of your own (`openssl rand -hex 32`), given to Prometheus too",
}
_PLACEHOLDER = re.compile(r"change[-_]?me", re.IGNORECASE)


def is_placeholder(value: str | None) -> bool:
    """Whether ``value`` is (or carries, like a URL's password) an example's placeholder."""
    return bool(value) and _PLACEHOLDER.search(value or "") is not None


class Settings(BaseSettings):
    # hide_input_in_errors: a mistyped key or secret is never echoed in the error
    model_config = SettingsConfigDict(
        env_prefix="GANTRY_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    home: Path = Field(default=Path(".gantry"), description="data folder (SQLite, repos, manifests)")
    host: str = "127.0.0.1"
    port_base: int = Field(default=8000, ge=1024, le=65000)
    kafka_bootstrap: str | None = None
    kafka_partitions: int = Field(default=3, ge=1, le=256)
    kafka_replication_factor: int = Field(default=1, ge=1, le=7)
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=10_000)
    # The fetch wait once a consumer has seen nothing for a while (shared/kafka_transport.py);
    # 0 keeps kafka_fetch_max_wait_ms always.
    kafka_fetch_idle_wait_ms: int = Field(default=0, ge=0, le=10_000)
    # The fetch wait once a consumer has seen nothing for 30 s (shared/kafka_transport.py); 0 keeps
    # kafka_fetch_idle_wait_ms.
    kafka_fetch_sleep_wait_ms: int = Field(default=0, ge=0, le=10_000)
    # The most events a consumer applies in one transaction (shared/consume.py).
    consumer_batch_max: int = Field(default=500, ge=1, le=10_000)
    kafka_idempotence: bool = True
    kafka_session_timeout_ms: int = Field(default=10_000, ge=500)
    # None: a third of the session timeout, at most 3 s (Kafka's rule; Apache Kafka drops a member
    # that stays silent for the session timeout; shared.bus.heartbeat_interval). gantry up sets 3000
    # for its embedded broker, which never drops a silent member (gantry/up.py).
    kafka_heartbeat_interval_ms: int | None = Field(default=None, ge=100, le=60_000)
    kafka_rebalance_timeout_ms: int = Field(default=4_000, ge=1_000)
    kafka_group_prefix: str = Field(default="gantry", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # The producer's max_request_size: keep it at or below the brokers' message.max.bytes
    # (Kafka's default is 1 MiB + 12 bytes), so what the producer accepts the broker takes.
    kafka_max_message_bytes: int = Field(default=1_048_576, ge=65_536, le=100 * 1_048_576)
    # Request bodies: read up to this, refused with 413 past it (checked while reading).
    request_max_bytes: int = Field(default=1_048_576, ge=1_024, le=100 * 1_048_576)
    # GitLab's pipeline hooks take a few KiB; GitLab itself sends at most 25 MB.
    webhook_max_bytes: int = Field(default=4 * 1_048_576, ge=1_024, le=25 * 1_048_576)
    # The gateway's audit trail keeps each record this long (about 13 months: a year back, and a bit).
    audit_retention_days: int = Field(default=400, ge=1, le=36_500)
    database_url: str | None = None
    gitlab_url: str | None = None
    gitlab_token: str | None = None
    public_url: str | None = None
    kubeconfig: str | None = None
    # How deploy reaches a cluster: "auto" = the kubeconfig when one is set, else the pod's
    # ServiceAccount when running in a pod with a token; "off" renders manifests even so.
    kubernetes: Literal["auto", "in-cluster", "kubeconfig", "off"] = "auto"
    kubernetes_create_namespaces: bool = True  # off: environments' namespaces must exist already
    image_registry: str = "registry.gantry.local"
    progress_deadline_seconds: int = Field(default=600, ge=5, le=86_400)
    secret: str | None = None
    # OTLP/HTTP base URL spans are exported to (…/v1/traces); unset: OTEL_EXPORTER_OTLP_ENDPOINT, else no traces
    otlp_endpoint: str | None = None
    # when set, GET /metrics wants "Authorization: Bearer <it>" (for a gateway whose port is public)
    metrics_token: str | None = Field(default=None, min_length=16)
    # Seals secret resource values at rest (32 bytes, base64): default derived from the secret above.
    encryption_key: str | None = None
    encryption_old_keys: str | None = None  # keys that still open values sealed before a rotation
    log_level: str = "info"
    # People from the identity provider (OpenID Connect, GitLab by default): README "People from GitLab".
    oidc_issuer: str | None = None
    oidc_audience: str | None = None  # the client id of Gantry's application at the provider
    oidc_user_claim: str = "preferred_username"
    oidc_owner_claims: str = ",".join(GITLAB_GROUP_CLAIM.format(level=level) for level in ("owner", "maintainer"))
    oidc_member_claims: str = GITLAB_GROUP_CLAIM.format(level="developer")
    oidc_groups_claims: str = "groups,groups_direct"
    oidc_membership_makes_member: bool = False
    oidc_org_admin_groups: str = ""
    oidc_deploy_admin_groups: str = ""
    oidc_project_groups: str = ""  # code=group/path,... ; else a group's last segment is the project code
    oidc_group_root: str | None = None
    oidc_jwks_min_refresh_seconds: int = Field(default=30, ge=1, le=3600)
    oidc_jwks_max_age_seconds: int = Field(default=3600, ge=60, le=86_400)
    # Where each service answers, when not on this host's port range (containers, Kubernetes).
    gateway_url_override: str | None = Field(default=None, alias="GANTRY_GATEWAY_URL")
    catalog_url: str | None = None
    versioning_url: str | None = None
    release_url: str | None = None
    deploy_url: str | None = None

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            if not _BOOTSTRAP.match(server.strip()):
                raise ValueError(
                    f"GANTRY_KAFKA_BOOTSTRAP: {server!r} is not host:port (example: 127.0.0.1:9092,kafka-2:9092)"
                )
        return value.replace(" ", "")

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.startswith(("postgres://", "postgresql://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "GANTRY_DATABASE_URL must be a PostgreSQL URL "
                "(postgresql://user:password@host:5432/gantry) or unset for SQLite files"
            )
        return value

    @field_validator("encryption_key", "encryption_old_keys")
    @classmethod
    def _check_keys(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value or not value.strip():
            return None
        setting = f"GANTRY_{(info.field_name or '').upper()}"
        try:
            parse_key(value, setting) if info.field_name == "encryption_key" else parse_keys(value, setting)
        except SealingError as exc:
            raise ValueError(str(exc)) from exc
        return value.strip()

    @field_validator("oidc_issuer")
    @classmethod
    def _check_issuer(cls, value: str | None) -> str | None:
        if not value:
            return None
        loopback = value.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:"))
        if not (value.startswith("https://") or loopback):
            raise ValueError(
                f"GANTRY_OIDC_ISSUER {value!r} must be an https:// URL (the issuer exactly as the provider names "
                "it, e.g. https://gitlab.example.com): keys fetched over plain HTTP could be anyone's"
            )
        return value

    @field_validator("oidc_project_groups")
    @classmethod
    def _check_project_groups(cls, value: str) -> str:
        parse_project_groups(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("GANTRY_LOG_LEVEL must be one of debug, info, warning, error")
        return value.lower()

    @model_validator(mode="after")
    def _check_gitlab_pair(self) -> Settings:
        if bool(self.gitlab_url) != bool(self.gitlab_token):
            raise ValueError(
                "set both GANTRY_GITLAB_URL and GANTRY_GITLAB_TOKEN to use GitLab, "
                "or neither to use local git repositories"
            )
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError(
                "GANTRY_OIDC_ISSUER is set but not GANTRY_OIDC_AUDIENCE: set it to the client id (Application ID) "
                "of Gantry's application at the provider, so tokens meant for other applications are refused"
            )
        if self.kubeconfig is None and os.environ.get("KUBECONFIG"):
            self.kubeconfig = os.environ["KUBECONFIG"]
        return self

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        for name, real in PLACEHOLDER_CHECKED.items():
            if is_placeholder(getattr(self, name)):
                raise ValueError(
                    f"GANTRY_{name.upper()} holds a placeholder from the examples ('change-me'): "
                    f"put {real} in its place before starting Gantry"
                )
        return self

    def port(self, service: str) -> int:
        return self.port_base + SERVICES.index(service)

    def service_url(self, service: str) -> str:
        override = self.gateway_url_override if service == "gateway" else getattr(self, f"{service}_url")
        if override:
            return override.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port(service)}"

    @property
    def gateway_url(self) -> str:
        return self.service_url("gateway")

    @property
    def hook_url(self) -> str:
        return f"{(self.public_url or self.gateway_url).rstrip('/')}/webhooks/gitlab"

    def require_bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise RuntimeError(
                "GANTRY_KAFKA_BOOTSTRAP is not set: start Gantry with `gantry up` (it runs the "
                "embedded broker) or point GANTRY_KAFKA_BOOTSTRAP at a Kafka cluster"
            )
        return self.kafka_bootstrap

    def installation_secret(self) -> str:
        """The installation secret: GANTRY_SECRET, else generated once into <home>/secret."""
        if self.secret:
            return self.secret
        path = self.home / "secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(32))
            tmp.chmod(0o600)
            with contextlib.suppress(FileExistsError):  # first writer wins, even with several processes racing
                os.link(tmp, path)
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
