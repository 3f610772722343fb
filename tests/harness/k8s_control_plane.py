"""A real Kubernetes control plane on 127.0.0.1, with kwok standing in for the kubelets.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok are built once from the
Go modules pinned in tools/k8s by tools/k8s/build.sh into ``${GANTRY_CACHE:-~/.cache/gantry}``.
Certificates come from the ``openssl`` command (the ``cryptography`` package is not a dependency).
Every file (certs, keys, etcd data, logs, kubeconfig) lives in one throwaway directory.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gantry.processes import ServerProcess, die_with_parent, free_port, log_tail, port_open, terminate

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "k8s" / "build.sh"
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"  # kwok's default overlaps the service range
NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# The stages kwokctl uses by default: nodes become Ready and renew leases, pods go straight to Running.
KWOK_LEASE_SECONDS = 40


def control_plane_bin() -> Path:
    """The directory holding the five binaries and kwok's stages, built on first use."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters) and service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    # P-256 keys: generated in milliseconds, accepted by Go, Python's ssl and the token signer.
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        pki / "ca.key",
        "-out",
        pki / "ca.crt",
        "-subj",
        "/CN=gantry-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )
    signed_by_ca = ("-CA", pki / "ca.crt", "-CAkey", pki / "ca.key")
    # 10.0.0.1 is the in-cluster `kubernetes` Service address, the first of SERVICE_CIDR.
    sans = (
        "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    _openssl(
        "req",
        "-x509",
        *ec,
        *signed_by_ca,
        "-keyout",
        pki / "apiserver.key",
        "-out",
        pki / "apiserver.crt",
        "-subj",
        "/CN=kube-apiserver",
        "-addext",
        f"subjectAltName={sans}",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=serverAuth",
    )
    # O=system:masters is bound to cluster-admin by the bootstrap RBAC policy.
    _openssl(
        "req",
        "-x509",
        *ec,
        *signed_by_ca,
        "-keyout",
        pki / "admin.key",
        "-out",
        pki / "admin.crt",
        "-subj",
        "/O=system:masters/CN=gantry-admin",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=clientAuth",
    )
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pki / "sa.key")
    _openssl("pkey", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


def kubeconfig_for(server: str, pki: Path) -> dict[str, Any]:
    """An admin kubeconfig with the certs embedded, so it works wherever it is copied."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "gantry-test", "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": "gantry-admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [{"name": "gantry-test", "context": {"cluster": "gantry-test", "user": "gantry-admin"}}],
        "current-context": "gantry-test",
    }


def fake_node(name: str) -> dict[str, Any]:
    """A kwok-managed node, after the manifest in kwok's docs.

    The docs' NoSchedule taint is left out: no real kubelet exists here, and pods under test
    should schedule without carrying a kwok-specific toleration.
    """
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION[0]: NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
        },
    }


class ControlPlane(ServerProcess):
    """etcd + kube-apiserver + controller-manager + scheduler + kwok with ``nodes`` fake nodes.

    Call start() from a thread that outlives the control plane (pytest's main thread does): the
    processes are tied to that thread's life so that a killed test run leaves none behind.
    """

    def __init__(self, nodes: int = 3) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="gantry-k8s-"))
        self.pki = self.workdir / "pki"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.startup_seconds: float | None = None  # process start -> all nodes Ready
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> None:
        """Build if needed, then start everything and wait until the nodes are Ready."""
        bin_dir = control_plane_bin()
        make_pki(self.pki)
        self.kubeconfig.write_text(json.dumps(kubeconfig_for(self.server, self.pki), indent=2))
        self._ssl = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        self._ssl.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        began = time.monotonic()
        deadline = began + timeout
        try:
            etcd = self._start_etcd(bin_dir)
            self._wait("etcd to listen", lambda: port_open(etcd), deadline)
            self._start_apiserver(bin_dir, etcd)
            self._wait("kube-apiserver /readyz", self._apiserver_ready, deadline)
            # The other three only talk to the apiserver, so they can start together.
            self._start_controller_manager(bin_dir)
            self._start_scheduler(bin_dir)
            self._start_kwok(bin_dir)
            for name in self.node_names:
                self._request("POST", "/api/v1/nodes", fake_node(name))
            self._wait("nodes Ready", self._nodes_ready, deadline)
            # Pods are refused until the controller-manager has made the namespace's service account.
            self._wait("default service account", self._default_service_account, deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the processes in reverse start order, then delete every generated file."""
        for _, proc in reversed(self._procs):
            terminate(proc, timeout=15)
        self._procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=die_with_parent,
            )
        self._procs.append((name, proc))

    def _start_etcd(self, bin_dir: Path) -> str:
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=gantry",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=gantry={peer}",
                "--unsafe-no-fsync",  # throwaway data: durability only costs test time
                "--log-level=warn",
            ],
        )
        return client.removeprefix("http://")

    def _start_apiserver(self, bin_dir: Path, etcd: str) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://{etcd}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
            ],
        )

    def _start_controller_manager(self, bin_dir: Path) -> None:
        pki = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--controllers=*",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # no metrics/health endpoint needed; nothing else to bind
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )

    def _start_scheduler(self, bin_dir: Path) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ],
        )

    def _start_kwok(self, bin_dir: Path) -> None:
        self._spawn(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={bin_dir / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION[0]}={NODE_ANNOTATION[1]}",
                f"--node-lease-duration-seconds={KWOK_LEASE_SECONDS}",
                f"--cidr={POD_CIDR}",
                # No --server-address/--node-port: kwok's kubelet-like API (logs, exec) stays off.
            ],
        )

    # -- readiness -----------------------------------------------------------------------------

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        """Poll ``ready`` until true; fail early if a process died, with every log's tail."""
        while True:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n" + self._log_tails()
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}\n" + self._log_tails())
            time.sleep(0.2)

    def _log_tails(self) -> str:
        return "\n".join(f"--- {name}.log ---\n{log_tail(self.workdir / f'{name}.log')}" for name, _ in self._procs)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self._ssl, timeout=10) as response:
            return json.loads(response.read())

    def _apiserver_ready(self) -> bool:
        request = urllib.request.Request(self.server + "/readyz")
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _nodes_ready(self) -> bool:
        nodes = self._request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        ready = {
            node["metadata"]["name"]
            for node in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
        }
        return ready >= set(self.node_names)

    def _default_service_account(self) -> bool:
        try:
            self._request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise
        return True
