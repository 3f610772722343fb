"""Every service's OpenAPI document is a contract its answers keep: schemathesis, with every check,
generates requests from the document (valid and invalid ones, with and without a token, with
methods the paths do not take, and sequences that follow the document's links) and checks each
answer's status, media type, headers and body against what the document says. Zero failures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.servers import SHAPES, serving
from tests.support import ADMIN

MAX_EXAMPLES = int(os.environ.get("GANTRY_CONTRACT_EXAMPLES", "15"))  # per operation: about a minute a service
SEED = os.environ.get("GANTRY_CONTRACT_SEED", "1")  # fixed: a failure is reproduced by the next run
CONFIG = Path(__file__).with_name("schemathesis.toml")
# /readyz answers 503 here, truly: this test runs the service without a broker (readiness is
# tested with one in tests/integration/test_gateway_service.py); the gateway's /events is an endless
# stream, with no answer to check (tests/unit/test_gateway_events.py reads it)
NOT_CHECKED = ["--exclude-operation-id", "readyz", "--exclude-operation-id", "streamEvents"]
# A resource's data keys become environment variables (R_<NAME>_<KEY>, upper-cased, other characters
# as '_'): two keys mapping to one variable are refused 422, naming both. That rule spans the keys of
# one object, which no JSON Schema can state, so "schema-valid data is accepted" cannot hold for the
# resource writes: they run again alone with every other check.
RESOURCE_WRITES = ["createResource", "updateResource"]
RUNS: dict[str, list[list[str]]] = {
    "deploy": [
        [arg for op in RESOURCE_WRITES for arg in ("--exclude-operation-id", op)],
        [
            *(arg for op in RESOURCE_WRITES for arg in ("--include-operation-id", op)),
            "--exclude-checks",
            "positive_data_acceptance",
        ],
    ]
}


def schemathesis(url: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--header",
            f"Authorization: {ADMIN['Authorization']}",
            "--seed",
            SEED,
            "--workers",
            "1",
            *NOT_CHECKED,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.mark.parametrize("service", sorted(SHAPES))
def test_every_answer_keeps_the_openapi_document(service: str, tmp_path: Path) -> None:
    with serving(service, tmp_path) as url:
        for extra in RUNS.get(service, [[]]):
            run = schemathesis(url, tmp_path, *extra)
            assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
