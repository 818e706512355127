"""`keyless` (or `python -m cli`): the arguments, the exit codes, and which mode runs.

Two modes. Direct (onboard, offboard, verify with --cluster ...): the engine runs here, as you. Against a
deployed Keyless (list, show, verify <id>, request, delete, sweep): its HTTP API, as you.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cli import local, remote
from cli.output import Output

EXIT_CODES = """exit codes:
  0  done: verified (onboard, verify), removed (offboard), or the API answered
  1  failed: the reason names the fix (a step, a check, the API's refusal, no sign-in)
  2  usage: a missing or bad argument, or a setting, named
  3  still pending: the --timeout passed first, or a check waits for something (a rollout);
     run the same command again later (it is idempotent)"""

DIRECT = """Direct mode runs Keyless's engine in this process with your own Azure sign-in
(DefaultAzureCredential: `az login`, or the AZURE_* variables) and the cluster access Keyless
uses; no deployed Keyless, no storage. There is no access policy here: your own Azure RBAC
(and the cluster's) is the limit, and the role allowlist (KEYLESS_ROLE_ALLOWLIST) still applies.
Each step is shown as it happens; "not yet" steps are waited out and run again.
Other KEYLESS_* settings are read from the environment (docs/settings.md)."""

REMOTE = """Against a deployed Keyless: --api <url> (or KEYLESS_API_URL). You sign in as yourself
for the API's app registration (--api-client-id or KEYLESS_API_CLIENT_ID): the Azure CLI's
sign-in, else a device code. A local Keyless (http://localhost) needs no sign-in."""


def _binding_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--cluster", required=required, help="the AKS cluster's resource id")
    p.add_argument("--namespace", required=required, help="the workload's Kubernetes namespace")
    p.add_argument("--service-account", required=required, help="the workload's Kubernetes ServiceAccount")
    p.add_argument("--account", required=required, help="the Azure OpenAI account's resource id")
    p.add_argument("--role", help="role definition GUID or name (default: Cognitive Services OpenAI User)")
    p.add_argument("--workload", action="append", metavar="DEPLOYMENT",
                   help="a Deployment to point at the identity and the endpoint (repeat for more)")  # fmt: skip


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=os.environ.get("KEYLESS_API_URL"),
                   help="the deployed Keyless's URL, e.g. https://<app>.azurewebsites.net "
                   "(env KEYLESS_API_URL)")  # fmt: skip
    p.add_argument("--api-client-id", default=os.environ.get("KEYLESS_API_CLIENT_ID"),
                   help="the API's app registration (client id or api:// URI) to sign in for "
                   "(env KEYLESS_API_CLIENT_ID; not needed for http://localhost)")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    root = argparse.ArgumentParser(
        prog="keyless",
        description="Passwordless (Entra Workload ID) access from AKS workloads to Azure OpenAI, "
        "verified and proven.\n\n" + DIRECT + "\n\n" + REMOTE,
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=description, epilog=EXIT_CODES,
                              formatter_class=fmt)  # fmt: skip

    onboard = command("onboard", "direct: give a workload keyless access, then verify and prove it",
                      "Onboard one workload in this process, then verify it, proof of access included "
                      "(KEYLESS_PROVE_ACCESS=false turns the proof off).\n\n" + DIRECT)  # fmt: skip
    _binding_options(onboard)
    onboard.add_argument("--dry-run", action="store_true", help="reads only: show what each step would do")
    onboard.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                         help="how long to wait out 'not yet' steps and pending checks (default 900)")  # fmt: skip

    offboard = command("offboard", "direct: take the access away (Azure first, then the cluster)",
                       "Offboard one workload in this process: its role assignment, federated credential and "
                       "identity, then its cluster objects, best effort. What another binding of the same "
                       "identity still uses stays.\n\n" + DIRECT)  # fmt: skip
    _binding_options(offboard)
    offboard.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                          help="how long to wait out 'not yet' steps (default 900)")  # fmt: skip

    verify = command("verify", "verify a binding: direct (--cluster ...) or an onboarding of the API (<id>)",
                     "With an onboarding id: the deployed Keyless verifies it, live. With --cluster ...: "
                     "verified here, reads only.\n\n" + DIRECT + "\n\n" + REMOTE)  # fmt: skip
    verify.add_argument("id", nargs="?", help="an onboarding's id (API mode)")
    _binding_options(verify, required=False)
    _api_options(verify)

    listing = command("list", "API: the onboardings you may see", "List the onboardings you may see (asked for by "
                      "you, or covered by your access policy), with their status and reason.\n\n" + REMOTE)  # fmt: skip
    listing.add_argument("--status", action="append", metavar="STATUS",
                         help="only these statuses (repeat, or comma-separate): pending, reconciling, ready, "
                         "verified, not-ready, failed, refused, revoked, offboarding, removed")  # fmt: skip
    listing.add_argument("--cluster", help="only this AKS cluster (resource id)")
    listing.add_argument("--namespace", help="only this namespace")
    listing.add_argument("--account", help="only this Azure OpenAI account (resource id)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    _api_options(listing)

    show = command("show", "API: one onboarding, its steps and reason", "Show one onboarding.\n\n" + REMOTE)
    show.add_argument("id", help="the onboarding's id")
    _api_options(show)

    request = command("request", "API: ask a deployed Keyless for an onboarding",
                      "Ask for an onboarding; the deployed Keyless checks your access policy, queues it and "
                      "reconciles it.\n\n" + REMOTE)  # fmt: skip
    _binding_options(request)
    request.add_argument("--dry-run", action="store_true", help="show the plan and what allows it; nothing is sent")
    _api_options(request)

    delete = command("delete", "API: offboard an onboarding", "Offboard an onboarding (queued).\n\n" + REMOTE)
    delete.add_argument("id", help="the onboarding's id")
    _api_options(delete)

    sweep = command("sweep", "API: the latest drift sweep's progress",
                    "The drift sweep now running (or the last): started, clusters done of all, suspects, "
                    "reconciles queued, duration.\n\n" + REMOTE)  # fmt: skip
    _api_options(sweep)

    whoami = command("whoami", "API: who you are to Keyless, and what you may ask for",
                     "Your object id, and the access-policy rules that name you: what of you each names, the "
                     "clusters, namespaces, service accounts and accounts it covers, and how much of its quota "
                     "is used.\n\n" + REMOTE)  # fmt: skip
    _api_options(whoami)
    return root


def _quiet_logs() -> None:
    """The command speaks for itself; the SDKs' expected refusals (Entra's "not yet") are not shown."""
    logging.basicConfig(level=logging.WARNING, format="keyless: %(levelname)s %(name)s: %(message)s")
    for name in ("azure", "msal", "urllib3", "kubernetes"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_logs()
    p = parser()
    args = p.parse_args(argv)
    if args.command == "list":
        args.status = [s.strip() for v in args.status or [] for s in v.split(",") if s.strip()]
        if args.limit < 1:
            p.error("--limit must be 1 or more")
    out = Output(as_json=args.json)
    if args.command in ("onboard", "offboard") or (args.command == "verify" and args.id is None):
        if args.command == "verify":
            missing = [o for o in ("cluster", "namespace", "service_account", "account") if not getattr(args, o)]
            if missing:
                p.error("verify: give an onboarding id, or --cluster, --namespace, --service-account and --account"
                        f" (missing: {', '.join('--' + m.replace('_', '-') for m in missing)})")  # fmt: skip
        if getattr(args, "timeout", 1) <= 0:
            p.error("--timeout must be more than 0 seconds")
        return local.run(args, out)
    return remote.run(args, out)


if __name__ == "__main__":
    sys.exit(main())
