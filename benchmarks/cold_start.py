"""Cold start: what the Functions host pays to import the app before the first invocation.

Median over fresh processes of `import function_app` (the app, as the host indexes it) against
importing the whole SDK stack the app uses, eagerly (every module of shared/ and the SDKs the
adapters load on first use). Target: the app's import costs at most a quarter of the eager stack.

    python -m benchmarks.cold_start [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from benchmarks.common import ROOT, machine, table

APP = "import function_app"
# What a first invocation loads on top of the app: the composition root, the engine and adapters,
# and the SDKs they import lazily (the same modules and names the adapters import).
EAGER = "; ".join(
    [
        APP,
        "import shared.app.composition, shared.app.keyless, shared.engine.reconcile",
        "import shared.adapters.arm, shared.adapters.clusters, shared.adapters.accounts",
        "import shared.adapters.identities, shared.adapters.roles, shared.adapters.kube",
        "import shared.adapters.ledger, shared.adapters.workqueue, shared.adapters.credentials",
        "from azure.identity import DefaultAzureCredential",
        "from azure.mgmt.msi import ManagedServiceIdentityClient",
        "from azure.mgmt.authorization import AuthorizationManagementClient",
        "from azure.mgmt.containerservice import ContainerServiceClient",
        "from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient",
        "from azure.data.tables import TableClient",
        "from azure.storage.queue import QueueClient",
        "from kubernetes import client",
        "client.CoreV1Api",
        "import yaml",
    ]
)
HEAVY = ("azure.mgmt", "kubernetes", "azure.identity", "azure.data.tables", "azure.storage.queue", "msal")
PROBE = """
import sys, time
t = time.perf_counter()
{code}
took = time.perf_counter() - t
heavy = sorted({{m.split('.')[0] + '.' + m.split('.')[1] if m.startswith('azure.') and m.count('.') else m.split('.')[0]
                for m in sys.modules if m.startswith({heavy!r})}})
print(took, ','.join(heavy))
"""


def measure(code: str, runs: int) -> tuple[float, str]:
    times, heavy = [], ""
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        times.append(float(out[0]))
        heavy = out[1] if len(out) > 1 else ""
    return statistics.median(times), heavy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    measure(APP, 1)  # warm the file cache and the bytecode
    measure(EAGER, 1)
    app, app_heavy = measure(APP, args.runs)
    eager, _ = measure(EAGER, args.runs)
    ratio = app / eager
    print(f"Cold start, median of {args.runs} fresh processes. {machine()}\n")
    rows = [
        ["import function_app (what the host does)", f"{app * 1000:.0f}", app_heavy or "none"],
        ["the whole SDK stack, eagerly", f"{eager * 1000:.0f}", "all"],
    ]
    print(table(["import", "ms (median)", "heavy SDKs loaded"], rows))
    verdict = "met" if ratio <= 0.25 else "NOT met"
    print(f"\napp / eager = {ratio:.2f}; target <= 0.25: {verdict}. Heavy SDKs load on first use.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
