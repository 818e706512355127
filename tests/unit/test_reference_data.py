"""The reference data the conformance tests read is in the repository, and SOURCES.md accounts for it:
every file there has a row naming its source repository, commit and sha256, and matches it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.reference_data import IN_REPOSITORY, reference_dir

SECTION = re.compile(r"^## .*\(`([^`]+)/`\)$")
ROW = re.compile(r"^\| `([^`]+)` \| ([\w.-]+/[\w.-]+) \| .* \| `([0-9a-f]{40})` \| (\d+) \| `([0-9a-f]{64})` \|")


def rows() -> dict[str, tuple[str, str, int, str]]:
    found, folder = {}, None
    for line in (IN_REPOSITORY / "SOURCES.md").read_text().splitlines():
        if line.startswith("## "):
            match = SECTION.match(line)
            folder = match.group(1) if match else None
        elif folder and (row := ROW.match(line)):
            local, repo, commit, size, sha = row.groups()
            found[f"{folder}/{local}"] = (repo, commit, int(size), sha)
    return found


def test_the_default_is_inside_the_repository_and_the_variable_overrides_it(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.delenv("KEYLESS_REFERENCE_DIR", raising=False)
    assert reference_dir() == IN_REPOSITORY == root / "tests" / "reference"
    monkeypatch.setenv("KEYLESS_REFERENCE_DIR", str(tmp_path))
    assert reference_dir() == tmp_path


def test_every_file_has_a_source_and_matches_it():
    files = {str(p.relative_to(IN_REPOSITORY)) for p in IN_REPOSITORY.rglob("*") if p.is_file()} - {"SOURCES.md"}
    sources = rows()
    assert files, "no reference data in tests/reference"
    unlisted, missing = sorted(files - set(sources)), sorted(set(sources) - files)
    assert (unlisted, missing) == ([], []), f"no row for {unlisted}; no file for {missing}"
    for path, (_, _, size, sha) in sources.items():
        data = (IN_REPOSITORY / path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), path
