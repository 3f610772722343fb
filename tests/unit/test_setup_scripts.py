"""First runs of the set-up scripts on a machine that has nothing yet: the control plane build and
the Kafka jar fetch into an empty cache, and the PostgreSQL install. Only the network-bound tools
(go, mvn, apt-get) are stand-ins, first on PATH; the scripts and the harness run for real."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.postgres_server import Installer, as_root, postgres_bin_dir

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "k8s" / "build.sh"
FETCH_SCRIPT = REPO / "tools" / "kafka" / "fetch.sh"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_STAGES = (
    "node/fast/node-initialize",
    "node/heartbeat-with-lease/node-heartbeat-with-lease",
    "pod/fast/pod-ready",
    "pod/fast/pod-complete",
    "pod/fast/pod-delete",
)
KAFKA_JARS = ("kafka_2.13-4.0.0.jar", "kafka-clients-4.0.0.jar")

# Writes one executable per package, named like the package's last element, into the -o folder.
FAKE_GO = """\
#!/usr/bin/env bash
set -euo pipefail
echo "$*" >>"$STAND_IN_CALLS"
case "$1" in
  build)
    shift; out=""; packages=()
    while (($#)); do
      case "$1" in
        -o) out="$2"; shift 2 ;;
        -ldflags) shift 2 ;;
        -*) shift ;;
        *) packages+=("$1"); shift ;;
      esac
    done
    for package in "${packages[@]}"; do
      printf '#!/bin/sh\\n' >"$out/${package##*/}"
      chmod +x "$out/${package##*/}"
    done ;;
  list) echo "$KWOK_MODULE_DIR" ;;
  *) exit 2 ;;
esac
"""

# Copies two jars into -DoutputDirectory; waits for $MVN_GO when set, so a test can hold a fetch.
FAKE_MVN = """\
#!/usr/bin/env bash
set -euo pipefail
echo "$*" >>"$STAND_IN_CALLS"
out=""
for arg in "$@"; do [[ "$arg" == -DoutputDirectory=* ]] && out="${arg#-DoutputDirectory=}"; done
if [[ -n "${MVN_GO:-}" ]]; then
  touch "$MVN_GO.waiting"
  for _ in $(seq 300); do [[ -e "$MVN_GO" ]] && break; sleep 0.1; done
fi
for jar in JARS; do echo "jar" >"$out/$jar"; done
""".replace("JARS", " ".join(KAFKA_JARS))

# "Installs" PostgreSQL 15 and 16 under $FAKE_ROOT, as Debian lays them out.
FAKE_APT_GET = """\
#!/usr/bin/env bash
set -euo pipefail
echo "$* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}" >>"$STAND_IN_CALLS"
if [[ "$1" == install ]]; then
  for version in 15 16; do
    mkdir -p "$FAKE_ROOT/lib/postgresql/$version/bin"
    printf '#!/bin/sh\\n' >"$FAKE_ROOT/lib/postgresql/$version/bin/initdb"
    chmod +x "$FAKE_ROOT/lib/postgresql/$version/bin/initdb"
  done
fi
"""


def stand_in(folder: Path, name: str, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(script)
    (folder / name).chmod(0o755)


def calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run_script(script: Path, env: dict[str, str], workdir: Path) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``bash script``, its output in files."""
    out, err = workdir / "stdout", workdir / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        status = subprocess.run(["bash", str(script)], env=env, stdout=stdout, stderr=stderr, timeout=60).returncode
    return status, out.read_text(), err.read_text()


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    """Environment for the scripts: an empty GANTRY_CACHE and the stand-ins first on PATH."""
    kwok_module = tmp_path / "kwok-module"
    for stage in KWOK_STAGES:
        stage_file = kwok_module / "kustomize" / "stage" / f"{stage}.yaml"
        stage_file.parent.mkdir(parents=True, exist_ok=True)
        stage_file.write_text(f"kind: Stage\nmetadata:\n  name: {stage.rsplit('/', 1)[1]}\n")
    stand_in(tmp_path / "bin", "go", FAKE_GO)
    stand_in(tmp_path / "bin", "mvn", FAKE_MVN)
    stand_in(tmp_path / "bin", "apt-get", FAKE_APT_GET)
    return {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "GANTRY_CACHE": str(tmp_path / "cache"),
        "KWOK_MODULE_DIR": str(kwok_module),
        "STAND_IN_CALLS": str(tmp_path / "calls"),
        "FAKE_ROOT": str(tmp_path / "root"),
    }


def test_first_control_plane_build_into_an_empty_cache_succeeds(stand_ins: dict[str, str], tmp_path: Path) -> None:
    status, stdout, stderr = run_script(BUILD_SCRIPT, stand_ins, tmp_path)

    assert status == 0, stderr
    bin_dir = Path(stdout.strip())
    assert stdout.count("\n") == 1 and bin_dir.parent.parent == tmp_path / "cache" and bin_dir.name == "bin"
    assert all(os.access(bin_dir / binary, os.X_OK) for binary in CONTROL_PLANE)
    stages = (bin_dir / "kwok-stages.yaml").read_text()
    assert [line for line in stages.splitlines() if "name:" in line] == [
        f"  name: {stage.rsplit('/', 1)[1]}" for stage in KWOK_STAGES
    ]
    assert [p.name for p in bin_dir.parent.iterdir() if p.name.startswith("bin")] == ["bin"], "no staging left"


def test_a_first_build_read_through_a_pipe_ends_with_the_script(stand_ins: dict[str, str]) -> None:
    # As the test harness reads it: the progress ticker's sleep must not hold the pipe (30 s) after exit.
    try:
        result = subprocess.run(["bash", str(BUILD_SCRIPT)], env=stand_ins, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the script's stdout stayed open after it exited") from exc
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).name == "bin"


def test_second_control_plane_build_is_a_no_op(stand_ins: dict[str, str], tmp_path: Path) -> None:
    first = run_script(BUILD_SCRIPT, stand_ins, tmp_path)
    assert first[0] == 0, first[2]
    built = calls(tmp_path / "calls")
    binaries = {p.name: p.stat().st_mtime_ns for p in Path(first[1].strip()).iterdir()}

    second = run_script(BUILD_SCRIPT, stand_ins, tmp_path)

    assert second == (0, first[1], ""), "nothing to build, nothing said"
    assert calls(tmp_path / "calls") == built, "go is not run again"
    assert {p.name: p.stat().st_mtime_ns for p in Path(second[1].strip()).iterdir()} == binaries


def test_first_kafka_fetch_into_an_empty_cache_succeeds(stand_ins: dict[str, str], tmp_path: Path) -> None:
    status, stdout, stderr = run_script(FETCH_SCRIPT, stand_ins, tmp_path)

    assert status == 0, stderr
    home = Path(stdout.strip())
    assert stdout.count("\n") == 1 and home.parent == tmp_path / "cache" and home.name.startswith("kafka-")
    assert sorted(p.name for p in (home / "libs").iterdir()) == sorted([".complete", *KAFKA_JARS])
    assert [p.name for p in home.iterdir() if p.name.startswith("libs")] == ["libs"], "no staging left"


def test_second_kafka_fetch_is_a_no_op(stand_ins: dict[str, str], tmp_path: Path) -> None:
    first = run_script(FETCH_SCRIPT, stand_ins, tmp_path)
    second = run_script(FETCH_SCRIPT, stand_ins, tmp_path)

    assert first[0] == 0, first[2]
    assert second == (0, first[1], "")
    assert len(calls(tmp_path / "calls")) == 1, "mvn ran once"


def test_two_kafka_fetches_at_once_fetch_once(stand_ins: dict[str, str], tmp_path: Path) -> None:
    held = {**stand_ins, "MVN_GO": str(tmp_path / "mvn-go")}
    first = subprocess.Popen(["bash", str(FETCH_SCRIPT)], env=held, stdout=subprocess.PIPE, text=True)
    wait_for(tmp_path / "mvn-go.waiting")
    second = subprocess.Popen(["bash", str(FETCH_SCRIPT)], env=held, stdout=subprocess.PIPE, text=True)
    (tmp_path / "mvn-go").touch()

    outputs = [process.communicate(timeout=60)[0] for process in (first, second)]

    assert [first.returncode, second.returncode] == [0, 0]
    assert outputs[0] == outputs[1]
    assert len(calls(tmp_path / "calls")) == 1, "the second run waited for the first and fetched nothing"
    libs = Path(outputs[0].strip()) / "libs"
    assert sorted(p.name for p in libs.iterdir()) == sorted([".complete", *KAFKA_JARS])


@pytest.fixture
def apt_get_on_path(stand_ins: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness runs in this process: the stand-in apt-get goes first on its PATH."""
    for name in ("PATH", "STAND_IN_CALLS", "FAKE_ROOT"):
        monkeypatch.setenv(name, stand_ins[name])


@pytest.mark.usefixtures("apt_get_on_path")
def test_missing_postgres_is_installed_with_apt_get(tmp_path: Path) -> None:
    installer = Installer(initdb_glob=f"{tmp_path}/root/lib/postgresql/*/bin/initdb", needs_root=False)

    found = postgres_bin_dir(installer)

    assert found == tmp_path / "root" / "lib" / "postgresql" / "16" / "bin", "the newest version"
    assert calls(tmp_path / "calls") == [
        "update -q DEBIAN_FRONTEND=noninteractive",
        "install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 postgresql DEBIAN_FRONTEND=noninteractive",
    ]
    assert postgres_bin_dir(installer) == found
    assert len(calls(tmp_path / "calls")) == 2, "installed once"


@pytest.mark.usefixtures("apt_get_on_path")
def test_an_install_that_leaves_no_initdb_says_so(tmp_path: Path) -> None:
    elsewhere = Installer(initdb_glob=f"{tmp_path}/elsewhere/*/bin/initdb", needs_root=False)

    with pytest.raises(RuntimeError, match="no .*/elsewhere/\\*/bin/initdb exists"):
        postgres_bin_dir(elsewhere)


def test_a_failing_install_step_says_which_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(tmp_path / "bin", "apt-get", "#!/bin/sh\necho 'E: Could not open lock file' >&2\nexit 100\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    installer = Installer(initdb_glob=f"{tmp_path}/none/*/bin/initdb", needs_root=False)

    with pytest.raises(RuntimeError, match="apt-get update -q` exited 100:\nE: Could not open lock file"):
        postgres_bin_dir(installer)


def test_installing_needs_root_or_sudo() -> None:
    apt = ["apt-get", "install", "-y", "postgresql"]
    assert as_root(apt, euid=0, sudo="/usr/bin/sudo") == apt
    assert as_root(apt, euid=1000, sudo="/usr/bin/sudo") == [
        "/usr/bin/sudo",
        "-n",
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        *apt,
    ]
    with pytest.raises(RuntimeError, match="sudo apt-get install postgresql"):
        as_root(apt, euid=1000, sudo=None)


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.02)
