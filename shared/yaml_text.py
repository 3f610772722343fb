"""YAML written and read through libyaml where PyYAML was built with it (its wheels are): several
times faster than the pure-Python emitter and parser, the same documents; the pure-Python ones
where libyaml is missing."""

from __future__ import annotations

from typing import Any

import yaml

SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_dump(data: Any, **options: Any) -> str:
    """``yaml.safe_dump``, through libyaml's emitter when there is one."""
    text: str = yaml.dump(data, Dumper=SAFE_DUMPER, **options)
    return text
