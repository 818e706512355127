"""The Function App's package: what `azd deploy` (and `func azure functionapp publish`) uploads.

Both start from the project folder and leave out what .funcignore matches, in .gitignore syntax. The
list here is the repository's files (`git ls-files`, tracked and untracked-not-ignored) plus what a
developer's machine also holds (a virtualenv, node_modules, local settings, caches), filtered the same way
with pathspec's gitignore rules.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"function_app.py", "host.json", "requirements.txt"}
CODE = ("handlers/", "shared/")
# Present on a developer's machine, never in git.
LOCAL_ONLY = [
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/azure/functions/__init__.py",
    "node_modules/azurite/package.json",
    "local.settings.json",
    ".azurite/__azurite_db_queue__.json",
    "__azurite_db_table__.json",
    ".azure/dev/.env",
    ".azure/config.json",
    "shared/__pycache__/settings.cpython-311.pyc",
    "handlers/__pycache__/api.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/shared/settings.data.json",
    ".ruff_cache/CACHEDIR.TAG",
    ".hypothesis/examples/0/1",
    ".import_linter_cache/x.json",
    ".git/HEAD",
    ".vscode/settings.json",
]
NEVER = (
    "cli/",  # the `keyless` command runs on people's machines, not in the Function App
    "tests/",
    "benchmarks/",
    "infra/",
    "scripts/",
    ".venv/",
    "node_modules/",
    ".azure/",
    ".azurite/",
    ".git/",
    ".ci/",
)


@functools.cache
def repository_files() -> tuple[str, ...]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return tuple(p for p in listed.split("\0") if p and (ROOT / p).is_file())


@functools.cache
def package() -> frozenset[str]:
    spec = pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())
    return frozenset(p for p in (*repository_files(), *LOCAL_ONLY) if not spec.match_file(p))


def test_the_package_holds_the_app():
    assert RUNTIME <= package()
    code = {p for p in repository_files() if p.startswith(CODE)}
    assert any(p.endswith(".py") for p in code)
    assert code <= package(), f"left out: {sorted(code - package())}"


def test_the_package_holds_nothing_else():
    assert {p for p in package() if p not in RUNTIME and not p.startswith(CODE)} == set()
    assert not [p for p in package() if "__pycache__" in p or p.endswith(".pyc")]


def test_tests_tools_and_local_settings_stay_out():
    for path in (*repository_files(), *LOCAL_ONLY):
        name = Path(path).name
        if path.startswith(NEVER) or name.startswith("local.settings") or name.startswith(".git"):
            assert path not in package(), path
    assert "local.settings.sample.json" not in package()
    assert any(p.startswith("tests/") for p in repository_files()), "the list is the repository's"


def test_the_team_pages_files_are_in_the_package():
    """handlers/ui.py serves them from handlers/static/ at run time: the package must carry them."""
    assert {
        "handlers/ui.py",
        "handlers/static/index.html",
        "handlers/static/app.js",
        "handlers/static/app.css",
    } <= package()
