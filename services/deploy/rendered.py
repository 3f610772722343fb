"""The embedded cluster driver: each deployment's objects written as manifest files, nothing runs them."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path

import yaml

from services.deploy.cluster import RolloutStatus, WorkloadSpec
from services.deploy.ingress import IngressSpec, render_ingress
from services.deploy.manifests import render_objects, render_yaml
from shared.naming import workload_name
from shared.yaml_text import SAFE_LOADER

_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RenderedManifestsDriver:
    """The embedded cluster: manifests written per environment, nothing runs them.

    Files are ``<root>/<environment>/<namespace>/<workload>.yaml``, written atomically (temp file
    + rename) with mode 0600 because the Secret's data is only base64-encoded.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    async def reachable(self) -> bool:
        """The manifests folder can be written."""

        def writable() -> bool:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.access(self.root, os.W_OK)

        return await asyncio.to_thread(writable)

    def path(self, project: str, service: str, environment: str, namespace: str, track: str = "stable") -> Path:
        for label, segment in (("environment", environment), ("namespace", namespace)):
            if not _PATH_SEGMENT.match(segment):
                raise ValueError(f"{label} {segment!r} cannot name a folder: use letters, digits, '_', '.', '-'")
        workload = workload_name(project, service, track)
        return self.root / environment / namespace / f"{workload}.yaml"

    async def apply(self, spec: WorkloadSpec) -> RolloutStatus:
        objects = render_objects(spec)
        path = self.path(spec.project, spec.service, spec.environment, spec.namespace, spec.track)
        await asyncio.to_thread(_write_atomically, path, render_yaml(objects, path.name))
        return _rendered(spec.replicas, path)

    async def status(
        self, project: str, service: str, environment: str, namespace: str, track: str = "stable"
    ) -> RolloutStatus | None:
        path = self.path(project, service, environment, namespace, track)
        return await asyncio.to_thread(_read_status, path)

    async def apply_ingress(self, spec: IngressSpec) -> None:
        """``<app>.ingress.yaml`` beside the workload's file; removed once no route is left.

        (Workload names never hold a '.', so this name never meets a workload's file.)"""
        folder = self.path(spec.project, spec.service, spec.environment, spec.namespace).parent
        path = folder / f"{spec.name}.ingress.yaml"
        ingress = render_ingress(spec)
        if ingress is None:
            # Most services have no route, and their Ingress file was never written: one lstat
            # here (microseconds, on the local folder) instead of a turn on a worker thread
            if os.path.lexists(path):  # noqa: ASYNC240
                await asyncio.to_thread(path.unlink, missing_ok=True)
        else:
            await asyncio.to_thread(_write_atomically, path, render_yaml([ingress], path.name))

    async def delete(self, project: str, service: str, environment: str, namespace: str, track: str = "stable") -> None:
        path = self.path(project, service, environment, namespace, track)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def remove(self, project: str, service: str, environment: str, namespace: str) -> None:
        """Remove the service's files: both tracks', and any other file beside them whose objects
        belong to it alone (labelled ``app=<app>``, such as its Ingress)."""
        tracks = [self.path(project, service, environment, namespace, track) for track in ("stable", "canary")]
        await asyncio.to_thread(_remove_files, tracks, workload_name(project, service))


def _rendered(replicas: int, path: Path) -> RolloutStatus:
    return RolloutStatus(
        state="rendered", desired=replicas, current=0, updated=0, available=0, message=f"manifests written to {path}"
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``.

    The rename is what matters: a reader (kubectl, GitOps, ``_read_status``) sees the old file or
    the new one, never half of one, and a crash of this process leaves the written file in the OS's
    cache, to disk in due course. No fsync: it cost an fdatasync per deployment for the one case
    it covers, an OS crash or power cut before the cache is written, and there the file is only a
    rendering of deploy's database (the record, committed and durable by itself): the newest file
    may then be missing or empty, which ``_read_status`` reports (not found, or failed) until the
    next apply of that deployment writes it again.

    The temporary file is named after the writing thread (no two threads on the machine share an
    id at once) instead of ``tempfile.mkstemp``'s random name, and the folder is made only when the
    file cannot be opened for want of it: a manifest's write took 98–102 µs of CPU with both, 64–67
    without (``python -m bench.manifest_files``). A temporary file a crash left behind is replaced."""
    temporary = path.with_name(f".{path.name}.{threading.get_native_id()}.tmp")
    descriptor = _open_new(temporary)
    try:
        data = memoryview(text.encode("utf-8"))
        try:
            while data:
                data = data[os.write(descriptor, data) :]
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _open_new(path: Path) -> int:
    """A new file at ``path``, mode 0600 (the Secret's data is only base64-encoded), its folder
    made if missing; a file a crashed write left there is removed first."""
    for _ in range(3):
        try:
            return os.open(path, _NEW_FILE, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            path.unlink(missing_ok=True)
    return os.open(path, _NEW_FILE, 0o600)


def _remove_files(tracks: list[Path], app: str) -> None:
    for path in tracks:
        path.unlink(missing_ok=True)
    folder = tracks[0].parent
    for path in folder.glob("*.yaml") if folder.is_dir() else ():
        if _only_of(path, app):
            path.unlink(missing_ok=True)


def _only_of(path: Path, app: str) -> bool:
    """Whether every labelled object in the file is ``app``'s (the Namespace carries no ``app``)."""
    try:
        objects = [
            obj for obj in yaml.load_all(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER) if isinstance(obj, dict)
        ]
    except (OSError, yaml.YAMLError):
        return False
    apps = {((obj.get("metadata") or {}).get("labels") or {}).get("app") for obj in objects} - {None}
    return apps == {app}


def _read_status(path: Path) -> RolloutStatus | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        objects = [obj for obj in yaml.load_all(text, Loader=SAFE_LOADER) if obj]
        deployment = next(obj for obj in objects if obj.get("kind") == "Deployment")
        replicas = int(deployment["spec"]["replicas"])
    except (yaml.YAMLError, StopIteration, KeyError, TypeError, ValueError) as exc:
        return RolloutStatus(
            state="failed",
            desired=0,
            current=0,
            updated=0,
            available=0,
            message=f"cannot read the manifests in {path}: {exc!r}",
        )
    return _rendered(replicas, path)
