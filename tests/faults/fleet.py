"""An organisation's worth of bindings, seeded straight into the emulators and the ledger, for the
drift sweep's benchmark (benchmarks/sweep.py) and its CI-sized test.

Onboarding 10,000 bindings one by one would take an hour and measure onboarding. Instead one binding
is onboarded for real (the template), and every other one is made to look exactly as a converged
run leaves it: an identity tagged for its workload, its federated credential and role assignment,
the ServiceAccount and ConfigMap as Keyless applies them (the template's objects, managed fields
included, with this binding's names and values), and a `ready` ledger record written two hours ago.
`inject_drift` then breaks 1 % of them in the four ways that matter, and `repaired` checks each from
the emulators' side, never from what Keyless says.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

from shared.adapters.roles import role_definition_id
from shared.app import sweep
from shared.domain import naming, planner
from shared.domain.binding import OPENAI_USER_ROLE_ID
from shared.domain.records import BindingRecord
from tests.faults.world import READY, RG_AKS, SUB, Workload, World, arm_event, expect_all

DRIFTS = ("credential", "role-assignment", "annotation", "configmap")
CLIENT_ID = planner.CLIENT_ID_ANNOTATION


def fleet_workloads(bindings: int, clusters: int, accounts: int) -> list[Workload]:
    """Binding i on cluster i mod C; each cluster's bindings spread over the accounts and ten namespaces."""
    return [
        Workload(i % clusters, f"team-{(i // clusters) % 10}", f"svc-{i}", (i // clusters) % accounts)
        for i in range(bindings)
    ]


@dataclasses.dataclass
class Drift:
    workload: Workload
    kind: str
    record: BindingRecord


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        out["metadata"].pop(field, None)
    return out


class Fleet:
    def __init__(self, world: World, bindings: int, clusters: int, accounts: int) -> None:
        self.w = world
        self.items = fleet_workloads(bindings, clusters, accounts)
        self.records: dict[str, BindingRecord] = {}

    # ------------------------------------------------------------------ seeding

    def seed(self, deadline: float = 120.0) -> None:
        from tests.faults.scenarios import settle_until

        w = self.w
        w.prepare(self.items)
        template = self.items[0]
        w.onboard(template)
        settle_until(w, expect_all([template], *READY), deadline=deadline)
        t_record = w.service.ledger.get(template.key)
        assert t_record is not None and t_record.status in READY, t_record
        kube = w.kubes[template.cluster]
        t_sa = kube.get_object("ServiceAccount", template.namespace, template.service_account)
        t_cm = kube.get_object("ConfigMap", template.namespace, template.binding().configmap_name)
        assert t_sa and t_cm
        stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        issuers = {c: w.issuer(c) for c in {i.cluster for i in self.items}}
        records = [self._seed_one(i, t_record, t_sa, t_cm, issuers[i.cluster], stamp) for i in self.items[1:]]
        assert w.service.ledger.create_many(records) == len(records)
        t_record.updated_at = stamp  # the template too is "two hours ago"
        w.service.ledger.save(t_record)
        self.records = {r.key: r for r in [t_record, *records]}

    def _seed_one(
        self, item: Workload, t_record: BindingRecord, t_sa: dict, t_cm: dict, issuer: str | None, stamp: str
    ) -> BindingRecord:
        w, b = self.w, item.binding()
        identity_id = (
            f"/subscriptions/{SUB}/resourceGroups/{RG_AKS}/providers/Microsoft.ManagedIdentity/"
            f"userAssignedIdentities/{b.identity_name}"
        )
        body = w.arm.add_identity(identity_id, location="eastus", tags=planner.identity_tags(b))
        props = body["properties"]
        w.arm.add_federated_credential(identity_id, b.credential_name, issuer or "", b.subject)
        scope = str(b.account)
        ra_name = naming.role_assignment_name(scope, OPENAI_USER_ROLE_ID, props["principalId"])
        ra = w.arm.add_role_assignment(
            scope, ra_name, props["principalId"], role_definition_id(SUB, OPENAI_USER_ROLE_ID)
        )
        kube = w.kubes[item.cluster]
        sa = _strip(t_sa)
        sa["metadata"].update(name=b.service_account, namespace=b.namespace)
        sa["metadata"]["annotations"].update(
            {CLIENT_ID: props["clientId"], planner.TENANT_ID_ANNOTATION: props["tenantId"]}
        )
        kube.put_object(sa)
        account = w.arm.cognitive_account(str(b.account)) or {}
        cm = _strip(t_cm)
        cm["metadata"].update(name=b.configmap_name, namespace=b.namespace)
        cm["metadata"]["labels"][planner.BINDING_LABEL] = b.key[:63]
        cm["data"].update(
            AZURE_OPENAI_ENDPOINT=account.get("properties", {}).get("endpoint", ""),
            AZURE_CLIENT_ID=props["clientId"],
            AZURE_TENANT_ID=props["tenantId"],
        )
        kube.put_object(cm)
        record = dataclasses.replace(
            t_record,
            key=b.key,
            cluster=str(b.cluster),
            namespace=b.namespace,
            service_account=b.service_account,
            account=str(b.account),
            identity={
                "resourceId": identity_id,
                "clientId": props["clientId"],
                "principalId": props["principalId"],
                "tenantId": props["tenantId"],
            },  # fmt: skip
            credential={"name": b.credential_name, "issuer": issuer or "", "subject": b.subject},
            role_assignment_id=ra["id"],
            kube_objects=[
                f"{b.namespace}/serviceaccounts/{b.service_account}",
                f"{b.namespace}/configmaps/{b.configmap_name}",
            ],
            created_at=stamp,
            updated_at=stamp,
            etag=None,
        )
        return record

    # ------------------------------------------------------------------ drift

    def inject_drift(
        self, fraction: float, events_for: tuple[str, ...] = ("credential",), kinds: tuple[str, ...] = DRIFTS
    ) -> list[Drift]:
        """Break `fraction` of the bindings (evenly spread, never the template), the `kinds` in turn.
        A deleted credential's Event Grid delete event is delivered (`events_for`), as Azure would:
        credentials are not in Resource Graph, so that is how Keyless hears of it between rotations."""
        count = round(len(self.items) * fraction)
        if count == 0:
            return []
        step = max(len(self.items) // count, 1)
        drifts = []
        for n, index in enumerate(range(step // 2 or 1, len(self.items), step)):
            if len(drifts) == count:
                break
            item = self.items[index]
            drifts.append(Drift(item, kinds[n % len(kinds)], self.records[item.key]))
        for d in drifts:
            self._break(d, deliver=d.kind in events_for)
        return drifts

    def _break(self, d: Drift, deliver: bool) -> None:
        w, r, b = self.w, d.record, d.workload.binding()
        kube = w.kubes[d.workload.cluster]
        if d.kind == "credential":
            identity = r.identity["resourceId"]
            with w.arm._lock:  # noqa: SLF001 - someone deletes it in the portal
                w.arm._identities[identity.lower()].fics.pop(r.credential["name"].lower())  # noqa: SLF001
            if deliver:
                fic = f"{identity}/federatedIdentityCredentials/{r.credential['name']}"
                w.deliver(
                    arm_event(
                        "delete",
                        fic,
                        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
                    )
                )
        elif d.kind == "role-assignment":
            with w.arm._lock:  # noqa: SLF001
                w.arm._role_assignments.pop(r.role_assignment_id.lower())  # noqa: SLF001
        elif d.kind == "annotation":
            sa = kube.get_object("ServiceAccount", b.namespace, b.service_account)
            del sa["metadata"]["annotations"][CLIENT_ID]
            del sa["metadata"]["managedFields"]
            kube.put_object(sa, field_manager="kubectl")
        else:
            kube.delete_object("ConfigMap", b.namespace, b.configmap_name)

    def repaired(self, d: Drift) -> bool:
        """Is the binding whole again, as the emulators see it?"""
        w, b = self.w, d.workload.binding()
        record = w.service.ledger.get(b.key)
        if record is None or record.status not in READY:
            return False
        identity = record.identity["resourceId"]
        kube = w.kubes[d.workload.cluster]
        if d.kind == "credential":
            return any(c["properties"]["subject"] == b.subject for c in w.arm.federated_credentials(identity))
        if d.kind == "role-assignment":
            principal = record.identity["principalId"].lower()
            return any(
                a["properties"]["principalId"].lower() == principal for a in w.arm.role_assignments(str(b.account))
            )
        if d.kind == "annotation":
            sa = kube.get_object("ServiceAccount", b.namespace, b.service_account) or {}
            return (sa.get("metadata", {}).get("annotations") or {}).get(CLIENT_ID) == record.identity["clientId"]
        return kube.get_object("ConfigMap", b.namespace, b.configmap_name) is not None


# ---------------------------------------------------------------------------------- one measured sweep

# Azure's published limits the sweep's requests count against (AZURE-FACTS; resource_graph.py cites ARG's):
# (burst, refill per second). ARM reads per principal and subscription; ARG queries per caller.
PUBLISHED = {"arm-reads": (250, 25.0), "arm-writes": (200, 10.0), "resource-graph": (15, 3.0)}


def operation(method: str, path: str) -> str:
    low = path.lower().split("?", 1)[0]
    if low.endswith("/providers/microsoft.resourcegraph/resources"):
        return "resource-graph"
    from shared.adapters.counting import is_write

    if is_write(method, path):
        return "write"
    if low.endswith("/listclusterusercredential") or low.endswith("/listclusteradmincredential"):
        return "cluster credentials"
    for marker, name in (("/federatedidentitycredentials", "credential list"),
                         ("/roleassignments", "role-assignment list"),
                         ("/userassignedidentities/", "identity get"), ("/userassignedidentities", "identity list"),
                         ("/deployments", "deployment list"), ("/managedclusters/", "cluster get"),
                         ("/accounts/", "account get")):  # fmt: skip
        if marker in low:
            return name
    return "other read"


def at_published_limits(by_operation: dict[str, int]) -> tuple[float, str]:
    """Seconds the request mix takes at Azure's published limits: the slowest bucket (what must wait for
    refills beyond its burst), and which one it is. One subscription: every request counts in one bucket."""
    counts = {
        "resource-graph": by_operation.get("resource-graph", 0),
        "arm-writes": by_operation.get("write", 0),
        "arm-reads": sum(n for op, n in by_operation.items() if op not in ("resource-graph", "write")),
    }
    times = {k: max(0, n - PUBLISHED[k][0]) / PUBLISHED[k][1] for k, n in counts.items()}
    worst = max(times, key=lambda k: times[k])
    return times[worst], worst


def measure_sweep(
    w: World, fleet: Fleet, drifts: list[Drift], deadline: float = 900.0, later: float = 0.0
) -> dict[str, Any]:
    """One sweep, timer to the last repair, with what it cost (planned `later` seconds from now)."""
    import time

    from shared.adapters import counting

    w.arm.log.clear()
    for kube in w.kubes:
        kube.log.clear()
    tally = counting.attempts()
    started = time.monotonic()
    report = sweep.start(w.service, now=time.time() + later)
    assert report.action == "started", report
    assert w.driver is not None
    w.driver.settle(deadline)
    seconds = time.monotonic() - started
    after = counting.attempts()
    arm_items = [r for r in w.arm.log.items if r.status != 429]
    by_op: dict[str, int] = {}
    for r in arm_items:
        op = operation(r.method, r.path)
        by_op[op] = by_op.get(op, 0) + 1
    kube_items = [r for k in w.kubes for r in k.log.items]
    n = len(fleet.items)
    clusters = len({i.cluster for i in fleet.items})
    at_limits, bottleneck = at_published_limits(by_op)
    run = w.service.sweeps.current()
    return {
        "bindings": n,
        "clusters": clusters,
        "seconds": seconds,
        "arm_requests": len(arm_items),
        "arm_per_binding": len(arm_items) / n,
        "by_operation": dict(sorted(by_op.items())),
        "graph_queries": by_op.get("resource-graph", 0),
        "kube_per_cluster": len(kube_items) / clusters,
        "kube_writes": sum(1 for r in kube_items if r.method not in ("GET", "HEAD")),
        "table_per_binding": (after.get("table", {}).get("attempts", 0) - tally.get("table", {}).get("attempts", 0))
        / n,
        "queue_per_binding": (after.get("queue", {}).get("attempts", 0) - tally.get("queue", {}).get("attempts", 0))
        / n,
        "arm_writes": by_op.get("write", 0),
        "throttled": len(w.arm.throttled()),
        "repaired": sum(1 for d in drifts if fleet.repaired(d)),
        "drifted": len(drifts),
        "at_limits_seconds": at_limits,
        "bottleneck": bottleneck,
        "suspects": report.suspects,
        "source": report.source,
        "shards": report.shards,
        "finished": bool(run and run.finished),
        "failures": len(w.driver.failures),
    }
