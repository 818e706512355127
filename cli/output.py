"""How the command writes: tables and lines for people, one JSON document for scripts (`--json`).

Colour only when stdout is a terminal and NO_COLOR is unset (https://no-color.org). With `--json`,
stdout holds the JSON document alone; live progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

COLOURS = {
    "green": "32",
    "red": "31",
    "yellow": "33",
    "dim": "2",
    "bold": "1",
}
BY_OUTCOME = {
    "created": "green",
    "updated": "green",
    "deleted": "green",
    "pass": "green",
    "verified": "green",
    "removed": "green",
    "ready": "green",
    "unchanged": "dim",
    "absent": "dim",
    "skipped": "dim",
    "not-yet": "yellow",
    "pending": "yellow",
    "not-ready": "yellow",
    "reconciling": "yellow",
    "offboarding": "yellow",
    "left": "yellow",
    "failed": "red",
    "fail": "red",
    "refused": "red",
    "revoked": "red",
}


class Output:
    def __init__(self, as_json: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.colour = _wants_colour(self.out)

    def line(self, text: str = "") -> None:
        """A line for people: on stdout, or on stderr when stdout carries JSON."""
        print(text, file=self.err if self.as_json else self.out, flush=True)

    def error(self, text: str) -> None:
        print(f"keyless: {printable(text)}", file=self.err, flush=True)

    def document(self, value: Any) -> None:
        print(json.dumps(value, indent=2, sort_keys=False), file=self.out, flush=True)

    def paint(self, text: str, colour: str | None) -> str:
        if not self.colour or colour is None or colour not in COLOURS:
            return text
        return f"\033[{COLOURS[colour]}m{text}\033[0m"

    def status(self, word: str, width: int = 0) -> str:
        """A status word in its colour, padded to `width` (the padding outside the colour codes)."""
        return self.paint(word, BY_OUTCOME.get(word)) + " " * max(width - len(word), 0)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], status_column: int | None = None) -> None:
        widths = [len(h) for h in headers]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        self.line("  ".join(self.paint(h.ljust(w), "bold") for h, w in zip(headers, widths, strict=True)).rstrip())
        for row in rows:
            cells = [
                self.status(cell, w) if i == status_column else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            self.line("  ".join(cells).rstrip())


def _wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def short(resource_id: str) -> str:
    """An ARM id as its last segment (the name people know it by)."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1] if resource_id else ""


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (C0 but tab and newline, DEL, C1) and bidi controls: what would drive a terminal or
reorder what is seen, rather than be read."""


def printable(value: Any) -> Any:
    """`value` (a decoded JSON document) with every string's control characters shown as U+FFFD. What the API
    answers holds other people's text (a cluster's error message, a colleague's display name): printed as it
    is, an escape sequence in it would run in the reader's terminal (write their clipboard, hide text)."""
    if isinstance(value, str):
        return _UNPRINTABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [printable(v) for v in value]
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    return value


def clip(text: str, width: int = 80) -> str:
    text = " ".join(printable(str(text)).split())
    return text if len(text) <= width else text[: width - 1] + "…"
