"""When a benchmark's preparation is refused, the error carries the services' warnings and errors
(``Stack.trouble``), so a failed run can be read after its temporary home is gone."""

import json
from pathlib import Path

from tests.e2e.stack import Stack


def _line(level: str, event: str) -> str:
    return json.dumps({"event": event, "service": "deploy", "level": level})


def test_trouble_gives_each_logs_warnings_errors_and_tracebacks(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    logs = stack.home / "logs"
    logs.mkdir(parents=True)
    (logs / "deploy.log").write_text(
        "\n".join(
            [
                _line("info", "service started"),
                _line("warning", "batch retried"),
                "Traceback (most recent call last):",
                _line("error", "request failed"),
                "",
            ]
        )
    )
    (logs / "catalog.log").write_text(_line("info", "service started") + "\n")

    trouble = stack.trouble()

    assert "deploy.log" in trouble
    assert "catalog.log" not in trouble  # nothing to say about it
    assert "batch retried" in trouble and "request failed" in trouble
    assert "Traceback (most recent call last):" in trouble
    assert "service started" not in trouble


def test_trouble_says_when_the_logs_hold_none(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    (stack.home / "logs").mkdir(parents=True)
    (stack.home / "logs" / "gateway.log").write_text(_line("info", "service started") + "\n")

    assert stack.trouble().startswith("no warning or error in the services' logs")
