"""Log lines name the service that wrote them; the service a line is about is ``service_code``."""

from __future__ import annotations

import io
import json
import logging
import sys

from services.versioning import handlers
from services.versioning.models import KnownService, ParkedHook, Pipeline, PipelineJob, Version
from shared.events import PipelineSucceeded, Topic, new_event
from shared.logging import configure_logging, get_logger
from tests.unit.test_versioning import SERVICE_ID, announce


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_versioning_logs_keep_their_own_service_and_name_the_domain_service_apart(make_uow, capsys):
    configure_logging("versioning")
    uow = await make_uow("versioning", [KnownService, Pipeline, PipelineJob, Version, ParkedHook])
    await announce(uow, SERVICE_ID, "acme/web", "42")
    succeeded = PipelineSucceeded(
        service_id=SERVICE_ID, project="shop", service="web", pipeline_id=7, ref="main", sha="a" * 40
    )
    await handlers.on_pipeline_succeeded(
        new_event(Topic.PIPELINE_SUCCEEDED, succeeded, source="t", subject="shop/web"),
        uow=uow,
        registry="registry.local",
    )
    created = [line for line in json_lines(capsys.readouterr().err) if line["event"] == "version created"]
    assert created, "versioning logs each version it creates"
    assert created[0]["service"] == "versioning" and created[0]["service_code"] == "web"


def test_a_line_that_passes_service_keeps_the_writer_and_moves_the_value_to_service_code(capsys):
    configure_logging("release")
    get_logger("t").info("released", service="web", environment="prod")
    (line,) = [line for line in json_lines(capsys.readouterr().err) if line["event"] == "released"]
    assert (line["service"], line["service_code"], line["environment"]) == ("release", "web", "prod")


def test_lines_go_to_stderr_as_it_is_when_written_with_the_loggers_name_and_level(monkeypatch):
    configure_logging("deploy")
    log = get_logger("services.deploy.example")
    log.info("first")  # the logger is made (and kept) here
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    log.debug("not at info")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed", deployment_id="d1")
    (line,) = json_lines(swapped.getvalue())
    assert (line["event"], line["level"], line["logger"], line["service"]) == (
        "failed",
        "error",
        "services.deploy.example",
        "deploy",
    )
    assert line["deployment_id"] == "d1" and "ValueError: bad value" in line["exception"]
    assert line["timestamp"].endswith("Z")


def test_other_libraries_lines_are_the_same_json(capsys):
    configure_logging("gateway")
    logging.getLogger("a.library").warning("port %s taken", 8000)
    (line,) = [line for line in json_lines(capsys.readouterr().err) if line["event"] == "port 8000 taken"]
    assert (line["level"], line["logger"], line["service"]) == ("warning", "a.library", "gateway")


def test_other_libraries_lines_go_to_stderr_as_it_is_when_written_not_a_closed_one(monkeypatch):
    """Logging set up while stderr was a stream that is closed since (a test's captured output)
    does not fail each later line with a ``--- Logging error ---`` traceback."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("deploy", "debug")
    first.close()
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    logging.getLogger("asyncio").debug("Using selector: %s", "EpollSelector")
    (line,) = json_lines(swapped.getvalue())
    assert (line["event"], line["level"], line["logger"]) == ("Using selector: EpollSelector", "debug", "asyncio")
    configure_logging("deploy")  # back to info, as the other tests expect
