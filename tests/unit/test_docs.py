"""The README and docs say what is true: the quick start on the first screen, the curl examples the demo
prints, links that resolve, and an attacks table whose test counts are the tests' own (so it cannot go
stale again). Read as text; nothing is run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SECURITY = (ROOT / "docs" / "security.md").read_text()

CELL = re.compile(r"`(tests/[\w/]+\.py)(?: -k \"([^\"]+)\")?` \((\d+)\)")
"""A test reference in the attacks table: `path` or `path -k "a or b"`, then (number of test functions)."""


def defined_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    ]


def selected(names: list[str], expression: str | None) -> list[str]:
    """pytest's `-k` for the one form the table uses: words joined by `or`, each a substring of the name."""
    if expression is None:
        return names
    words = [w.strip() for w in expression.split(" or ")]
    assert all(re.fullmatch(r"[a-z0-9_]+", w) for w in words), f"-k {expression!r}: only `a or b` of name parts"
    return [n for n in names if any(w in n for w in words)]


def attacks_table() -> list[str]:
    start = SECURITY.index("**Attacks tried**")
    rows = SECURITY[start:].split("\n\n", 2)[1]
    return [line for line in rows.splitlines() if line.startswith("| ") and not line.startswith(("| attack", "| ---"))]


def test_the_quick_start_is_on_the_first_screen():
    first = "\n".join(README.splitlines()[:40])
    for command in ("bash scripts/start --check", "bash scripts/start ", "bash .ci/run"):
        assert command in first, command
    assert "Quick start" in first and "Who runs it" in first and "Who calls it" in first


def test_the_readme_is_read_in_minutes():
    assert len(README.splitlines()) <= 150


def test_the_curl_examples_are_the_ones_the_demo_prints():
    from shared.domain.binding import Binding
    from tests.demo.serve import examples
    from tests.demo.world import REQUEST

    key = Binding.create(REQUEST["cluster"], REQUEST["namespace"], REQUEST["serviceAccount"],
                         REQUEST["openAIAccount"]).key  # fmt: skip
    for line in examples(key):
        assert "    " + line + "\n" in README, f"README lacks the demo's example: {line}"


@pytest.mark.parametrize("doc", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_links_resolve(doc):
    text = (ROOT / doc).read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / doc).parent.joinpath(target).exists(), f"{doc} links to {target}, which does not exist"


def test_every_attack_row_names_tests_and_their_counts_are_the_tests_own():
    rows = attacks_table()
    assert len(rows) >= 10
    for row in rows:
        cells = CELL.findall(row)
        assert cells, f"a row of the attacks table names no test: {row[:80]}"
        for path, expression, count in cells:
            file = ROOT / path
            assert file.is_file(), f"{path} does not exist"
            found = selected(defined_tests(file), expression or None)
            assert found, f"{path} -k {expression!r} selects no test"
            assert len(found) == int(count), f"{path} -k {expression!r}: {len(found)} tests, the table says {count}"


def test_the_attack_suites_are_all_in_the_table():
    named = {path for row in attacks_table() for path, _, _ in CELL.findall(row)}
    suites = {
        "tests/functions/test_attacks.py",
        "tests/functions/test_quota_attacks.py",
        "tests/functions/test_list_privacy.py",
        "tests/functions/test_reauthorisation.py",
        "tests/functions/test_security.py",
        "tests/functions/test_fuzz.py",
        "tests/e2e/test_ownership.py",
    }
    assert suites <= named, sorted(suites - named)
