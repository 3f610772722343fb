"""How deploy writes rendered manifests: the bytes PyYAML's pure-Python dumper gives, through
Gantry's block writer or libyaml, and a file is replaced whole by a rename (no fsync, no temporary file left behind)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from services.deploy import manifests, rendered
from services.deploy.manifests import render_objects, render_yaml
from services.deploy.rendered import RenderedManifestsDriver
from shared import yaml_text
from tests.unit.test_manifests import make_spec

UNUSUAL = {
    "notes": {
        "type": "config",
        "data": {"text": "a line\nand another: with a colon", "unicode": "déploiement ✓", "empty": "", "n": 3},
    }
}


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
def test_libyaml_is_used_and_the_bytes_are_the_pure_python_dumpers() -> None:
    assert yaml_text.SAFE_DUMPER is yaml.CSafeDumper
    for resources in ({**UNUSUAL}, {"db": {"type": "database", "data": {"url": "postgres://u:p@h/db"}}}):
        objects = render_objects(make_spec(resources=resources))
        written = render_yaml(objects, "app.yaml")
        pure = yaml.dump_all(
            objects,
            Dumper=yaml.SafeDumper,
            explicit_start=True,
            sort_keys=True,
            default_flow_style=False,
            allow_unicode=True,
        )
        assert written == f"{manifests.HEADER} app.yaml\n{pure}"
        assert list(yaml.load_all(written, Loader=yaml.CSafeLoader)) == objects


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
