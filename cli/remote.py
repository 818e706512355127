"""A deployed Keyless through its HTTP API: list, show, verify, request, delete, sweep, whoami.

The token is the person's own (shared.app.signin: the Azure CLI's sign-in, else a device code) for the
API's app registration; a local Keyless (http://localhost, the dev principal) is called without one.
HTTP with the standard library: one request at a time, JSON both ways.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cli.output import Output, clip, printable, short
from shared.app import signin
from shared.domain.errors import KeylessError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PENDING = 0, 1, 2, 3
TIMEOUT_SECONDS = 60.0


class ApiFailed(Exception):
    """The API refused or failed: its status and error (code, message, field), for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api:
    def __init__(self, url: str, client_id: str, out: Output) -> None:
        base = url.rstrip("/")
        self.base = base[: -len("/api")] if base.endswith("/api") else base
        self.client_id = client_id
        self.out = out
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if signin.needs_token(self.base):
            if self._token is None:
                self._token = signin.token(self.client_id, self.out.error)
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def call(self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v})
        url = f"{self.base}/api{path}" + (f"?{query}" if query else "")
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - http(s) only
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ApiFailed(0, f"api: {self.base!r} is not an http(s) URL")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310 - checked above
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiFailed(exc.code, _error_text(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiFailed(0, f"could not reach {self.base} ({reason}): is --api right, and the app up?") from None
        answer = json.loads(text) if text else None
        return answer if self.out.as_json else printable(answer)  # JSON escapes control characters itself


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read().decode()).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    field = f" [{error['field']}]" if error.get("field") else ""
    message = error.get("message") or exc.reason
    return printable(f"{exc.code} {error.get('code') or ''}{field}: {message}".replace("  ", " "))  # type: ignore[no-any-return]


def run(args: argparse.Namespace, out: Output) -> int:
    if not args.api:
        out.error("api: say which Keyless to talk to: --api <url> or KEYLESS_API_URL")
        return EXIT_USAGE
    api = Api(args.api, args.api_client_id or "", out)
    try:
        return COMMANDS[args.command](api, args, out)
    except ApiFailed as exc:
        out.error(str(exc))
        return EXIT_USAGE if exc.status == 400 else EXIT_FAILED
    except ValueError as exc:  # no client id for a remote Keyless
        out.error(str(exc))
        return EXIT_USAGE
    except KeylessError as exc:  # no sign-in
        out.error(exc.reason)
        return EXIT_FAILED


def _list(api: Api, args: argparse.Namespace, out: Output) -> int:
    params = {"cluster": args.cluster, "namespace": args.namespace, "account": args.account,
              "status": ",".join(args.status or []), "pageSize": str(min(args.limit, 200))}  # fmt: skip
    found: list[dict[str, Any]] = []
    while len(found) < args.limit:
        page = api.call("GET", "/onboardings", params)
        found += page["value"]
        token = page.get("continuationToken")
        if not token:
            break
        params["continuationToken"] = token
    found = found[: args.limit]
    if out.as_json:
        out.document({"value": found})
        return EXIT_OK
    if not found:
        out.line("no onboardings (that you may see) match")
        return EXIT_OK
    rows = [
        [
            o["id"],
            o["status"],
            f"{o['namespace']}/{o['serviceAccount']}",
            short(o["cluster"]),
            short(o["openAIAccount"]),
            clip(o.get("reason") or "", 60),
        ]  # fmt: skip
        for o in found
    ]
    out.table(["ID", "STATUS", "WORKLOAD", "CLUSTER", "ACCOUNT", "REASON"], rows, status_column=1)
    return EXIT_OK


def _show(api: Api, args: argparse.Namespace, out: Output) -> int:
    o = api.call("GET", f"/onboardings/{_id(args.id)}")
    if out.as_json:
        out.document(o)
        return EXIT_OK
    out.line(f"{o['id']}  {out.status(o['status'])}  {o.get('reason') or ''}".rstrip())
    for label, value in (
        ("workload", f"{o['namespace']}/{o['serviceAccount']} on {o['cluster']}"),
        ("account", o["openAIAccount"]),
        ("role", o["roleDefinitionId"]),
        ("deployments", ", ".join(o.get("workloads") or []) or "-"),
        ("next attempt", o.get("nextAttemptAt") or "-"),
        ("requested by", f"{o.get('requestedBy') or '-'} ({o.get('source')})"),
        ("updated", o.get("updatedAt")),
    ):
        out.line(f"  {label:<13} {value}")
    if o.get("steps"):
        out.table(["  STEP", "OUTCOME", "REASON"],
                  [[f"  {s['step']}", s["outcome"], clip(s.get("reason") or "", 80)] for s in o["steps"]],
                  status_column=1)  # fmt: skip
    for left in o.get("leftovers") or []:
        out.line(f"  left: {left.get('object')}: {left.get('reason')}")
    return EXIT_OK


def _verify(api: Api, args: argparse.Namespace, out: Output) -> int:
    report = api.call("GET", f"/onboardings/{_id(args.id)}/verification")
    code = {"pass": EXIT_OK, "fail": EXIT_FAILED}.get(report["status"], EXIT_PENDING)
    if out.as_json:
        out.document(report)
        return code
    out.line(f"{report['id']}  verification {out.status(report['status'])}  (onboarding {report['onboardingStatus']})")
    out.table(["  CHECK", "STATUS", "REASON"],
              [[f"  {c['name']}", c["status"], clip(c.get("reason") or "", 90)] for c in report["checks"]],
              status_column=1)  # fmt: skip
    return code


def _request(api: Api, args: argparse.Namespace, out: Output) -> int:
    body: dict[str, Any] = {"cluster": args.cluster, "namespace": args.namespace,
                            "serviceAccount": args.service_account, "openAIAccount": args.account}  # fmt: skip
    if args.role:
        body["role"] = args.role
    if args.workload:
        body["workloads"] = args.workload
    answer = api.call("POST", "/onboardings", {"dryRun": "true" if args.dry_run else ""}, body)
    if out.as_json:
        out.document(answer)
        return EXIT_OK
    if args.dry_run:
        plan = answer["plan"]
        out.line(f"{answer['id']}  dry run, allowed by {answer['grantedBy']}: nothing was written")
        out.table(["  STEP", "WOULD", "REASON"],
                  [[f"  {s['step']}", s["outcome"], clip(s.get("reason") or "", 80)] for s in plan["steps"]],
                  status_column=1)  # fmt: skip
        return EXIT_OK
    out.line(f"{answer['id']}  {out.status(answer['status'])}  queued: follow it with `keyless show {answer['id']}`")
    return EXIT_OK


def _delete(api: Api, args: argparse.Namespace, out: Output) -> int:
    answer = api.call("DELETE", f"/onboardings/{_id(args.id)}")
    if out.as_json:
        out.document(answer)
        return EXIT_OK
    out.line(f"{answer['id']}  {out.status(answer['status'])}  offboarding queued: Azure's access goes first")
    return EXIT_OK


def _sweep(api: Api, args: argparse.Namespace, out: Output) -> int:
    try:
        s = api.call("GET", "/sweeps/latest")
    except ApiFailed as exc:
        if exc.status != 404:
            raise
        if out.as_json:
            out.document(None)
        else:
            out.line("no drift sweep has run yet")
        return EXIT_OK
    if out.as_json:
        out.document(s)
        return EXIT_OK
    state = "finished" if s["finishedAt"] else ("running" if s["planned"] else "planning")
    out.line(f"sweep {s['number']} ({s['id']}): {out.paint(state, 'green' if s['finishedAt'] else 'yellow')}")
    duration = f"{s['durationSeconds']:.1f} s" if s["durationSeconds"] is not None else "-"
    for label, value in (
        ("started", s["startedAt"]),
        ("finished", s["finishedAt"] or "-"),
        ("duration", duration),
        ("clusters", f"{s['shardsDone']} done of {s['shards']}"),
        ("suspects", str(s["suspects"])),
        ("reconciles", f"{s['queued']} queued"),
        ("repaired", f"{s['repaired']} (what each changed: `keyless show <id>`)"),
        ("read from", s["source"] or "-"),
    ):
        out.line(f"  {label:<11} {value}")
    return EXIT_OK


def _whoami(api: Api, args: argparse.Namespace, out: Output) -> int:
    me = api.call("GET", "/me")
    if out.as_json:
        out.document(me)
        return EXIT_OK
    how = " (the dev principal: a local Keyless)" if me["signedInWith"] == "dev-principal" else ""
    out.line(f"signed in as {me['name'] or '-'} ({me['objectId']}){how}")
    if me["hint"]:
        out.line(out.paint(me["hint"], "yellow"))
    for rule in me["rules"]:
        out.line("")
        out.line(f"rule {rule['name']}  ({', '.join(rule['matchedBy'])})")
        for label, values in (
            ("clusters", rule["clusters"]),
            ("namespaces", rule["namespaces"]),
            ("service accts", rule["serviceAccounts"]),
            ("accounts", rule["accounts"]),
            ("roles", rule["roles"]),
            ("workloads", rule["workloads"] or ["none (it patches no Deployment)"]),
        ):
            out.line(f"  {label:<14} {', '.join(values) or '-'}")
        out.line(f"  {'bindings':<14} {rule['liveBindings']} of {rule['maxBindings']} in use")
    if me["allowedSubscriptions"]:
        out.line("")
        out.line(f"only in subscriptions: {', '.join(me['allowedSubscriptions'])}")
    return EXIT_OK


def _id(value: str) -> str:
    return urllib.parse.quote(value.strip(), safe="")


COMMANDS = {
    "list": _list,
    "show": _show,
    "verify": _verify,
    "request": _request,
    "delete": _delete,
    "whoami": _whoami,
    "sweep": _sweep,
}
