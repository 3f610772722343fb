"""Integration tier: a broker + database pair per parameter, and service settings built on it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support import SECRET

PAIRS = ["embedded+sqlite", "apache+postgres"]


@pytest.fixture(params=PAIRS)
def service_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for services under test on one of the two real broker/database pairs."""
    if request.param == "embedded+sqlite":
        bootstrap = request.getfixturevalue("embedded_kafka")
        return Settings(home=tmp_path, kafka_bootstrap=bootstrap, secret=SECRET,
                        kafka_fetch_max_wait_ms=10, kafka_idempotence=False, kafka_session_timeout_ms=1000)
    bootstrap = request.getfixturevalue("apache_kafka")
    postgres = request.getfixturevalue("postgres")
    database = f"gantry_{os.urandom(4).hex()}"
    postgres.create_database(database)
    return Settings(home=tmp_path, kafka_bootstrap=bootstrap, secret=SECRET, kafka_fetch_max_wait_ms=100,
                    kafka_idempotence=True, database_url=postgres.url(database))
