"""The extra cost of proving access (KEYLESS_PROVE_ACCESS): requests and seconds per verification.

N bindings onboarded on one cluster and account; each verified live (as the API does: everything read
again) with the proof off, then on; a public cluster (TokenRequest on the API server) and a private one
(kubectl create token through run command). Requests are counted by the emulators (ARM, Kubernetes,
Entra, the OpenAI data plane); seconds are real, against local emulators (no network latency: in Azure
add a round trip per request, and run command's pod start, seconds, for a private cluster).

    python -m benchmarks.access_proof [--bindings 20]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.common import ROOT, machine, table


@contextlib.contextmanager
def world(private: bool) -> Iterator[tuple[Any, Any, Any, Any]]:
    sys.path.insert(0, str(ROOT))
    from shared.domain.settings import Settings
    from tests.access_services import access_services
    from tests.conftest import NAMESPACE
    from tests.emulators.arm import ARM_SCOPE
    from tests.emulators.common import TestCA
    from tests.emulators.kube import KubeEmulator

    ca = TestCA()
    kube = KubeEmulator(ca).start()
    kube.add_namespace(NAMESPACE)
    try:
        with access_services(ca, kube, private=private) as services:
            settings = Settings.from_env(
                {
                    "KEYLESS_ARM_ENDPOINT": services.arm.url,
                    "KEYLESS_ARM_SCOPE": ARM_SCOPE,
                    "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path),
                    "KEYLESS_AUTHORITY_HOST": services.entra.url,
                    "KEYLESS_ARM_PACING_SCALE": "0",
                }
            )
            yield services, kube, settings, ca
    finally:
        kube.stop()


def counts(services: Any, kube: Any) -> dict[str, int]:
    return {
        "arm": len(services.arm.log.items),
        "kube": len(kube.log.items),
        "entra": len(services.entra.log.items),
        "openai": len(services.openai.log.items),
        "run commands": len(services.arm.run_commands),
    }


def clear(services: Any, kube: Any) -> None:
    for log in (services.arm.log, kube.log, services.entra.log, services.openai.log):
        log.clear()
    services.arm.run_commands.clear()


def measure(bindings: int, private: bool) -> list[list[Any]]:
    from shared.domain.binding import Binding
    from shared.engine.reconcile import Engine
    from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE
    from tests.emulators.credential import StaticCredential

    rows: list[list[Any]] = []
    with world(private) as (services, kube, settings, _):
        warm, *items = [Binding.create(CLUSTER_ID, NAMESPACE, f"svc-{n}", ACCOUNT_ID) for n in range(bindings + 1)]
        engine = Engine.from_settings(settings, StaticCredential())
        for b in (warm, *items):
            assert engine.reconcile(b).status == "ready"
        results: dict[bool, tuple[float, dict[str, int]]] = {}
        for prove in (False, True):
            engine = Engine.from_settings(dataclasses.replace(settings, prove_access=prove), StaticCredential())
            engine.verify(warm)  # connections and SDK models warm, not counted (nor reused: another binding)
            clear(services, kube)
            started = time.perf_counter()
            for b in items:
                report = engine.verify(b)
                if prove:
                    assert report.check("access").status == "pass", report.check("access").as_dict()
            results[prove] = (time.perf_counter() - started, counts(services, kube))
        cluster = "private (run command)" if private else "public (API server)"
        for prove, (seconds, c) in results.items():
            per = {k: v / bindings for k, v in c.items()}
            rows.append(
                [cluster, "on" if prove else "off", f"{seconds / bindings * 1000:.0f}"]
                + [f"{per[k]:.1f}" for k in ("arm", "kube", "entra", "openai", "run commands")]
            )
        off, on = results[False], results[True]
        extra = {k: (on[1][k] - off[1][k]) / bindings for k in on[1]}
        rows.append(
            [cluster, "extra", f"{(on[0] - off[0]) / bindings * 1000:.0f}"]
            + [f"{extra[k]:+.1f}" for k in ("arm", "kube", "entra", "openai", "run commands")]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bindings", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"Proving access, {args.bindings} bindings per case. {machine()}\n")
    rows = measure(args.bindings, private=False) + measure(args.bindings, private=True)
    headers = ["cluster", "proof", "ms / verification", "ARM", "Kubernetes", "Entra", "data plane", "run commands"]
    print(table(headers, rows))
    print(
        "\nRequests per verification, counted by the emulators. The proof adds one TokenRequest (or one run"
        "\ncommand), one Entra token request and one data-plane read; ARM reads only to explain a refusal."
    )


if __name__ == "__main__":
    main()
