"""The work queue's messages as the worker reads them (shared.app.messages.parse_message)."""

from __future__ import annotations

import json

import pytest

from shared.app.messages import BadMessage, message, parse_message

KEY = "0" * 32


def test_a_binding_message_keeps_the_sweep_that_queued_it():
    parsed = parse_message(message("binding", key=KEY, reason="drift sweep: x", sweep="0123456789abcdef"))
    assert parsed["sweep"] == "0123456789abcdef"


@pytest.mark.parametrize("sweep", ["../x", "a/b", "0123456789ABCDEF", "", "0123456789abcdef0", 7])
def test_a_sweep_that_is_not_a_sweeps_id_is_dropped_not_the_message(sweep):
    """Whoever writes the queue could name any table partition through it (`repaired-<sweep>`)."""
    parsed = parse_message(json.dumps({"kind": "binding", "key": KEY, "sweep": sweep}))
    assert parsed["key"] == KEY and "sweep" not in parsed


def test_a_message_without_its_key_is_refused():
    with pytest.raises(BadMessage):
        parse_message(json.dumps({"kind": "binding", "sweep": "0123456789abcdef"}))


def test_a_shard_message_names_a_sweep_by_its_id():
    assert parse_message(message("sweep", sweep="0123456789abcdef", cluster="c"))["sweep"] == "0123456789abcdef"
    with pytest.raises(BadMessage, match="sweep"):
        parse_message(message("sweep", sweep="../other", cluster="c"))
