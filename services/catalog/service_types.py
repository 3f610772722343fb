"""The service types a service is made from, each with its repository template.

Templates live in ``templates/<type code>/``: a ``type.yaml`` (code, name, description) and the
files of the new repository, where ``{{service_code}}``, ``{{service_name}}``, ``{{project}}`` and
``{{group}}`` are replaced by the service's values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

TEMPLATES_DIR = Path(__file__).parent / "templates"
PLACEHOLDERS = ("service_code", "service_name", "project", "group")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class ServiceType:
    code: str
    name: str
    description: str
    template_dir: Path


class UnknownServiceType(ValueError):
    """The service type code is not one of ``SERVICE_TYPES``."""


def load_service_types(root: Path = TEMPLATES_DIR) -> dict[str, ServiceType]:
    """Read every ``<root>/<code>/type.yaml``; the folder name must equal its ``code``."""
    types: dict[str, ServiceType] = {}
    for type_file in sorted(root.glob("*/type.yaml")):
        meta = yaml.safe_load(type_file.read_text(encoding="utf-8")) or {}
        code = meta.get("code")
        if code != type_file.parent.name or not meta.get("name"):
            raise RuntimeError(f"{type_file}: needs 'code: {type_file.parent.name}' and a 'name'")
        types[code] = ServiceType(
            code=code,
            name=str(meta["name"]),
            description=str(meta.get("description", "")),
            template_dir=type_file.parent,
        )
    return types


SERVICE_TYPES: dict[str, ServiceType] = load_service_types()


def _fill(text: str, context: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in context:
            return context[key]
        if key in PLACEHOLDERS:
            raise ValueError(f"template {where} uses {{{{{key}}}}} but no value was given for it")
        return match.group(0)

    return _PLACEHOLDER.sub(replace, text)


def template_files(type_code: str, context: Mapping[str, str]) -> dict[str, str]:
    """The files of a new repository of type ``type_code``: relative POSIX path → content.

    Placeholders ``{{key}}`` are replaced with ``context[key]``; a missing value for one of
    ``PLACEHOLDERS`` raises ``ValueError``; other ``{{…}}`` text is left as it is.
    """
    service_type = SERVICE_TYPES.get(type_code)
    if service_type is None:
        raise UnknownServiceType(
            f"unknown service type {type_code!r}: choose one of {', '.join(sorted(SERVICE_TYPES))}"
        )
    files: dict[str, str] = {}
    for path in sorted(service_type.template_dir.rglob("*")):
        rel = path.relative_to(service_type.template_dir).as_posix()
        if not path.is_file() or rel == "type.yaml" or "__pycache__" in path.parts:
            continue
        files[rel] = _fill(path.read_text(encoding="utf-8"), context, f"{type_code}/{rel}")
    return files
