"""docs/rules.md names, for each product rule, the function that enforces it and the tests that show
it: every name it gives must exist, so the table cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")


def _named(cell: str) -> list[tuple[str, str]]:
    path, _, names = cell.partition(":")
    return [(path.strip(), name.strip().split(".")[-1].rstrip("*_")) for name in names.split(",") if name.strip()]


def test_every_function_and_test_that_rules_md_names_exists():
    missing = []
    for cell in re.findall(r"`((?:services|shared|tests)/[^`]+)`", RULES):
        source = ROOT / cell.partition(":")[0].strip()
        if not source.exists():
            missing.append(cell)
            continue
        text = source.read_text(encoding="utf-8")
        for path, name in _named(cell):
            if name and not re.search(rf"(def|class) {re.escape(name)}", text):
                missing.append(f"{path}: {name}")
    assert missing == []


def test_the_readme_points_to_the_rules():
    assert "docs/rules.md" in (ROOT / "README.md").read_text(encoding="utf-8")
