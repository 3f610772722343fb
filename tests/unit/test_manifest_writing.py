"""How deploy writes rendered manifests: libyaml's dumper gives the bytes the pure-Python one
gave, and a file is replaced whole by a rename (no fsync, no temporary file left behind)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from services.deploy import manifests, rendered
from services.deploy.manifests import render_objects, render_yaml
from services.deploy.rendered import RenderedManifestsDriver
from tests.unit.test_manifests import make_spec

UNUSUAL = {
    "notes": {
        "type": "config",
        "data": {"text": "a line\nand another: with a colon", "unicode": "déploiement ✓", "empty": "", "n": 3},
    }
}


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
def test_libyaml_dumper_is_used_and_writes_the_same_bytes_as_the_pure_python_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert manifests.SAFE_DUMPER is yaml.CSafeDumper
    objects = render_objects(make_spec(resources={**UNUSUAL}))
    fast = render_yaml(objects, "app.yaml")
    monkeypatch.setattr(manifests, "SAFE_DUMPER", yaml.SafeDumper)
    assert render_yaml(objects, "app.yaml") == fast
    assert list(yaml.load_all(fast, Loader=yaml.CSafeLoader)) == objects


def test_apply_replaces_the_file_by_rename_without_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(source: str, target: Path) -> None:
        replaced.append((Path(source).name, Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(rendered.os, "replace", recording_replace)
    driver = RenderedManifestsDriver(tmp_path)
    asyncio.run(driver.apply(make_spec(replicas=1)))
    asyncio.run(driver.apply(make_spec(replicas=3)))
    path = driver.path("shop", "web-service", "dev", "shop-dev")
    assert synced == []
    assert [target for _, target in replaced] == [path.name, path.name]
    assert all(source.startswith(f".{path.name}.") and source.endswith(".tmp") for source, _ in replaced)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    deployment = next(o for o in yaml.safe_load_all(path.read_text()) if o and o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
