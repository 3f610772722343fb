"""Deterministic derived names: slugs, Kubernetes (DNS-1123) names, label values, GitLab paths.

Every name Gantry derives from user input (a project code, a service code, a version) comes from
here, so the catalog, the SCM adapters and the deploy drivers always agree. The same input gives
the same name on every machine. A name too long for its limit is cut and suffixed with the first
8 hex digits of the SHA-256 of the full name, so two long names that share a prefix stay distinct.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

DNS1123_MAX = 63
LABEL_VALUE_MAX = 63
GITLAB_PATH_MAX = 255
_HASH_LEN = 8

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
GITLAB_PATH = re.compile(r"^[a-z0-9]([a-z0-9]|[._-](?=[a-z0-9]))*$")
_GROUP_SEGMENT = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")

_NOT_SLUG = re.compile(r"[^a-z0-9-]+")
_NOT_GITLAB = re.compile(r"[^a-z0-9._-]+")
_SPECIAL_RUN = re.compile(r"[._-]{2,}")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LEN]


def _shorten(name: str, max_len: int, strip: str) -> str:
    """Cut ``name`` to ``max_len`` keeping it unique: ``<prefix>-<8 hex of sha256(name)>``."""
    if len(name) <= max_len:
        return name
    room = max_len - _HASH_LEN - 1
    if room < 1:
        raise ValueError(f"max_len={max_len} is too small to shorten {name!r} (needs >= 10)")
    prefix = name[:room].rstrip(strip)
    if not prefix:
        return _digest(name)
    return f"{prefix}-{_digest(name)}"


def slugify(text: str) -> str:
    """Lower-case; every run of characters outside ``[a-z0-9-]`` becomes ``-``; trim ``-``.

    ``"My Service"`` → ``"my-service"``, ``"web.api_v2"`` → ``"web-api-v2"``,
    ``"café"`` → ``"caf"``. The result may be empty (for ``"服务"`` or ``"--"``).
    """
    return _NOT_SLUG.sub("-", text.lower()).strip("-")


# The names below are made for every event deploy handles (the same few services over and over):
# each is kept once made, in a bounded memo. A name that cannot be made raises every time.
NAMES_KEPT = 4096


@lru_cache(maxsize=NAMES_KEPT)
def dns1123_name(*parts: str, max_len: int = DNS1123_MAX) -> str:
    """A DNS-1123 label from ``parts``: their slugs joined with ``-``, at most ``max_len`` chars.

    Parts whose slug is empty are skipped. A longer name is cut and suffixed with ``-`` and the
    first 8 hex digits of the SHA-256 of the full joined name. Raises ``ValueError`` when no part
    has any usable character.
    """
    slugs = [slug for slug in (slugify(part) for part in parts) if slug]
    if not slugs:
        raise ValueError(
            f"cannot derive a Kubernetes name from {list(parts)!r}: it needs at least one letter or digit (a-z, 0-9)"
        )
    name = _shorten("-".join(slugs), max_len, "-")
    if not DNS1123_LABEL.match(name):  # pragma: no cover - guaranteed by construction
        raise ValueError(f"derived name {name!r} is not a DNS-1123 label")
    return name


@lru_cache(maxsize=NAMES_KEPT)
def label_value(text: str) -> str:
    """A Kubernetes label value for ``text`` (e.g. a version such as ``v1.2.0+build.7``).

    Characters outside ``[A-Za-z0-9._-]`` become ``-``; the value starts and ends with a letter
    or digit; at most 63 characters (cut with a hash suffix). Case is kept. May be empty.
    """
    value = _NOT_LABEL.sub("-", text).strip("._-")
    value = _shorten(value, LABEL_VALUE_MAX, "._-")
    if not LABEL_VALUE.match(value):  # pragma: no cover - guaranteed by construction
        raise ValueError(f"derived label value {value!r} is not valid")
    return value


def check_gitlab_group(group: str) -> str:
    """Validate a GitLab group full path (``acme`` or ``acme/platform``); return it unchanged.

    Each segment: letters, digits, ``_``, ``.``, ``-``; not starting or ending with ``.``/``-``.
    Raises ``ValueError``; ``..`` and absolute paths are refused (the path also names folders).
    """
    segments = group.split("/")
    if not group or any(not _GROUP_SEGMENT.match(seg) for seg in segments):
        raise ValueError(
            f"{group!r} is not a GitLab group path: use segments of letters, digits, '_', '.', "
            "'-' separated by '/', each starting and ending with a letter, digit or '_' "
            "(example: acme/platform)"
        )
    return group


def gitlab_path(group: str, code: str) -> str:
    """The path of a service's repository inside the GitLab group ``group``.

    Lower-case ``code``; runs of characters outside ``[a-z0-9._-]`` become ``-``; runs of special
    characters (``.``, ``_``, ``-``) collapse to one ``-``; no special character at either end;
    never ending in ``.git``/``.atom``. ``group`` is validated (``check_gitlab_group``) but is not
    part of the result: the full path is ``f"{group}/{gitlab_path(group, code)}"``.
    Raises ``ValueError`` if ``code`` has no letter or digit.
    """
    check_gitlab_group(group)
    path = _NOT_GITLAB.sub("-", code.lower())
    path = _SPECIAL_RUN.sub("-", path).strip("._-")
    for suffix in (".git", ".atom"):
        if path.endswith(suffix):
            path = path[: -len(suffix)] + "-" + suffix[1:]
    if not path:
        raise ValueError(
            f"cannot derive a GitLab path from service code {code!r}: it needs at least one letter or digit"
        )
    path = _shorten(path, GITLAB_PATH_MAX, "._-")
    if not GITLAB_PATH.match(path):  # pragma: no cover - guaranteed by construction
        raise ValueError(f"derived GitLab path {path!r} is not valid")
    return path


@lru_cache(maxsize=NAMES_KEPT)
def workload_name(project: str, service: str, track: str = "stable") -> str:
    """The Kubernetes name of a service's workload in one track (at most 63 characters).

    ``workload_name("shop", "web-service")`` → ``"shop-web-service"`` (the stable track, also the
    ``app`` label and the Service name); ``track="canary"`` → ``"shop-web-service-canary"``.
    Any other track is appended the same way. The track suffix is kept even when the name is cut.
    """
    track_slug = slugify(track)
    if not track_slug:
        raise ValueError(f"track {track!r} needs at least one letter or digit (stable, canary)")
    if track_slug == "stable":
        return dns1123_name(project, service)
    return suffixed_name(dns1123_name(project, service), track_slug)


def suffixed_name(base: str, suffix: str, max_len: int = DNS1123_MAX) -> str:
    """``<base>-<suffix>`` as a DNS-1123 label; when too long, ``base`` is shortened (with its
    hash) so the suffix stays readable: ``suffixed_name(workload, "config")`` → ``…-config``.
    """
    suffix_slug = slugify(suffix)
    if not suffix_slug or len(suffix_slug) > max_len // 2:
        raise ValueError(f"suffix {suffix!r} must have 1 to {max_len // 2} letters or digits")
    return f"{dns1123_name(base, max_len=max_len - len(suffix_slug) - 1)}-{suffix_slug}"
