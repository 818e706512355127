"""Where the official reference data lives that the conformance tests read.

The files are in the repository (tests/reference, sources in its SOURCES.md), so a clone is all the
tests need; KEYLESS_REFERENCE_DIR points them at another copy with the same layout.
"""

from __future__ import annotations

import os
from pathlib import Path

IN_REPOSITORY = Path(__file__).resolve().parent / "reference"


def reference_dir() -> Path:
    return Path(os.environ.get("KEYLESS_REFERENCE_DIR") or IN_REPOSITORY)
