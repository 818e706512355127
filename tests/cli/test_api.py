"""The `keyless` command against a deployed Keyless: the app's own HTTP functions served on a localhost port
(tests/serve_functions.py, as `func start` would), the worker fed from Azurite by the suite's driver, and
the command called as a user would, its stdout and exit code read. Local, so no token: the dev principal."""

from __future__ import annotations

import json

import pytest

from cli.__main__ import main
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import AI, ai_service
from tests.functions.conftest import TEAM_GROUP, TEAM_OID
from tests.serve_functions import FunctionServer

BINDING = ["--cluster", CLUSTER_ID, "--namespace", NAMESPACE, "--service-account", SERVICE_ACCOUNT,
           "--account", ACCOUNT_ID]  # fmt: skip


@pytest.fixture
def api(host, kube, monkeypatch):
    monkeypatch.setenv("KEYLESS_DEV_PRINCIPAL", json.dumps({"oid": TEAM_OID, "groups": [TEAM_GROUP]}))
    monkeypatch.delenv("KEYLESS_API_URL", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    ai_service(kube)
    with FunctionServer(host) as server:
        yield server


def keyless(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def as_json(capsys, *args: str) -> tuple[int, object]:
    code, out, err = keyless(capsys, *args, "--json")
    return code, json.loads(out)


def test_request_list_show_verify_sweep_delete_through_the_api(api, host, capsys):
    url = ["--api", api.url]
    code, plan = as_json(capsys, "request", *BINDING, "--workload", AI, "--dry-run", *url)
    assert code == 0 and plan["grantedBy"] == "rule 'team-a'" and plan["plan"]["dryRun"] is True, plan
    code, out, _ = keyless(capsys, "request", *BINDING, "--workload", AI, *url)
    assert code == 0 and "pending" in out, out
    key = out.split()[0]
    host.drain()

    code, out, _ = keyless(capsys, "list", "--status", "verified", *url)
    assert code == 0, out
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATUS", "WORKLOAD", "CLUSTER", "ACCOUNT", "REASON"]
    assert row.split()[:5] == [key, "verified", f"{NAMESPACE}/{SERVICE_ACCOUNT}", "aks1", ACCOUNT_ID.rsplit("/", 1)[-1]]
    code, listed = as_json(capsys, "list", "--status", "failed,not-ready", "--account", ACCOUNT_ID, *url)
    assert code == 0 and listed == {"value": []}
    code, listed = as_json(capsys, "list", "--account", ACCOUNT_ID.upper(), "--namespace", NAMESPACE, *url)
    assert [o["id"] for o in listed["value"]] == [key]

    code, shown = as_json(capsys, "show", key, *url)
    assert code == 0 and shown["id"] == key and shown["status"] == "verified"
    code, out, _ = keyless(capsys, "show", key, *url)
    assert out.startswith(f"{key}  verified") and "identity" in out
    code, report = as_json(capsys, "verify", key, *url)
    assert code == 0 and report["status"] == "pass", report

    code, out, _ = keyless(capsys, "sweep", *url)
    assert code == 0 and out.strip() == "no drift sweep has run yet"
    host.timer()
    host.drain()
    code, sweep = as_json(capsys, "sweep", *url)
    assert code == 0 and sweep["shardsDone"] == sweep["shards"] == 1, sweep
    code, out, _ = keyless(capsys, "sweep", *url)
    assert "clusters    1 done of 1" in out and "finished" in out.splitlines()[0], out
    assert "  repaired    0 (what each changed" in out, out

    code, gone = as_json(capsys, "delete", key, *url)
    assert code == 0 and gone["status"] == "offboarding"
    host.drain()
    code, shown = as_json(capsys, "show", key, *url)
    assert shown["status"] == "removed"
    assert ("GET", f"/api/onboardings/{key}", 200) in api.calls


def test_api_exit_codes(api, capsys, monkeypatch):
    url = ["--api", api.url]
    code, _, err = keyless(capsys, "show", "0" * 32, *url)
    assert code == 1 and "404" in err
    code, _, err = keyless(capsys, "show", "not-an-id", *url)
    assert code == 2 and "400" in err and "[id]" in err, err
    code, _, err = keyless(capsys, "request", *BINDING[:2], "--namespace", "kube-system", *BINDING[4:], *url)
    assert code == 1 and "403" in err and "namespace" in err, err
    code, _, err = keyless(capsys, "list", "--status", "broken", *url)
    assert code == 2 and "[status]" in err, err
    code, _, err = keyless(capsys, "list")
    assert code == 2 and "KEYLESS_API_URL" in err
    code, _, err = keyless(capsys, "list", "--api", "https://keyless.example.invalid")
    assert code == 2 and "KEYLESS_API_CLIENT_ID" in err, err
    monkeypatch.setenv("KEYLESS_API_URL", api.url)
    code, listed = as_json(capsys, "list")
    assert code == 0 and listed == {"value": []}
    with pytest.raises(SystemExit) as usage:
        main(["verify", "--cluster", CLUSTER_ID])
    assert usage.value.code == 2 and "--service-account" in capsys.readouterr().err


def test_whoami_shows_the_rules_that_name_you_and_their_quota(api, capsys):
    url = ["--api", api.url]
    code, out, _ = keyless(capsys, "whoami", *url)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"signed in as developer ({TEAM_OID}) (the dev principal: a local Keyless)", lines[0]
    assert f"rule team-a  (group {TEAM_GROUP})" in lines
    assert "  namespaces     team-a, team-b, ns-*" in lines and "  bindings       0 of 250 in use" in lines, out
    assert "other-team" not in out
    code, me = as_json(capsys, "whoami", *url)
    assert code == 0 and [r["name"] for r in me["rules"]] == ["team-a"] and me["signedInWith"] == "dev-principal"


# What a cluster's error message, or a colleague's display name, could carry into another person's terminal:
# OSC 52 writes the clipboard, SGR 8 hides the text after it, a bidi override reorders what is seen, and a
# C1 CSI (0x9b) is an escape on its own to many terminals.
TERMINAL_ATTACK = "\x1b]52;c;Y3VybCBldmlsfHNo\x07\x1b[8mhidden \u202eevil\x9b31m"


def test_what_the_api_holds_cannot_drive_the_terminal_of_whoever_lists_it(api, host, capsys):
    import dataclasses

    from shared.app import composition

    url = ["--api", api.url]
    code, out, _ = keyless(capsys, "request", *BINDING, *url)
    assert code == 0, out
    key = out.split()[0]
    host.queue.clear_messages()
    ledger = composition.service().ledger
    record = ledger.get(key)
    ledger.save(dataclasses.replace(record, status="failed", reason=f"the cluster said: {TERMINAL_ATTACK}"))

    for args in (("list",), ("show", key)):
        code, out, err = keyless(capsys, *args, *url)
        assert code == 0, err
        assert "the cluster said" in out, out
        for c in "\x1b\x07\x9b\u202e":
            assert c not in out + err, (args, repr(out))
    code, shown = as_json(capsys, "show", key, *url)
    assert shown["reason"] == f"the cluster said: {TERMINAL_ATTACK}", "--json keeps the data as it is (escaped)"
