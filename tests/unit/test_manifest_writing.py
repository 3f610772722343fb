"""How deploy writes rendered manifests: the bytes PyYAML's pure-Python dumper gives, through
Gantry's block writer or libyaml, and a file is replaced whole by a rename (no fsync, no temporary file left behind)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.deploy import manifests, rendered
from services.deploy.ingress import IngressSpec, RouteRule
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


def test_a_manifest_is_private_to_its_owner_and_its_folder_made_again_when_removed(tmp_path: Path) -> None:
    """The Secret's data is only base64-encoded: each file is 0600, from its first write on, and
    the folder is made when the file cannot be opened for want of it, also after someone removed it."""
    driver = RenderedManifestsDriver(tmp_path / "manifests")
    path = driver.path("shop", "web-service", "dev", "shop-dev")
    asyncio.run(driver.apply(make_spec(replicas=1)))
    assert path.stat().st_mode & 0o777 == 0o600
    for left in path.parent.iterdir():
        left.unlink()
    path.parent.rmdir()
    asyncio.run(driver.apply(make_spec(replicas=2)))
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_temporary_file_a_crashed_write_left_behind_is_replaced(tmp_path: Path) -> None:
    """The temporary file is named after the writing thread: one a crash left (a thread of an
    earlier process with the same id) is removed, whatever it held, and the write goes on."""
    target = tmp_path / "app.yaml"
    left = tmp_path / f".app.yaml.{threading.get_native_id()}.tmp"
    left.write_text("half a manifest")
    left.chmod(0o644)
    rendered._write_atomically(target, "kind: Deployment\n")
    assert target.read_text() == "kind: Deployment\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.yaml"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "app.yaml"
    rendered._write_atomically(target, "old\n")

    def refused(source: object, destination: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(rendered.os, "replace", refused)
    with pytest.raises(OSError, match="no space"):
        rendered._write_atomically(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.yaml"]


def test_an_ingress_without_routes_takes_no_worker_thread_when_there_is_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most services have no route: their Ingress file was never written, and nothing is handed
    to a worker thread to remove it. One that was written is removed."""
    driver = RenderedManifestsDriver(tmp_path / "manifests")
    handed: list[str] = []
    real_to_thread = asyncio.to_thread

    async def recording_to_thread(call: Any, /, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(call, "__name__", repr(call)))
        return await real_to_thread(call, *args, **kwargs)

    monkeypatch.setattr(rendered.asyncio, "to_thread", recording_to_thread)
    routed = IngressSpec("shop", "web-service", "dev", "shop-dev", routes=(RouteRule("web", "/web/**", False),))
    unrouted = IngressSpec("shop", "web-service", "dev", "shop-dev")
    path = driver.path("shop", "web-service", "dev", "shop-dev").with_name("shop-web-service.ingress.yaml")

    asyncio.run(driver.apply_ingress(unrouted))
    assert handed == [] and not path.exists()
    asyncio.run(driver.apply_ingress(routed))
    assert handed == ["_write_atomically"] and path.exists()
    asyncio.run(driver.apply_ingress(unrouted))
    assert handed == ["_write_atomically", "unlink"] and not path.exists()
