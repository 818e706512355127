"""Verification I/O: read everything a binding depends on and let shared.domain.verification judge it.

Reads only. A read that fails becomes a `pending` (temporary) or `fail` (permanent) check. The
cluster is reached as a run would (shared.engine.cluster_access: run command for a private cluster).
With KEYLESS_PROVE_ACCESS, the `access` check does what the pod will do (shared.engine.access):
verified then means a token of the service account opened the account.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.adapters import telemetry
from shared.domain import planner, retry_policy, verification
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, TemporaryError
from shared.domain.observed import AccountState, IdentityState
from shared.domain.results import ReconcileResult
from shared.engine.access import prove_access
from shared.engine.cluster_access import ClusterConnection
from shared.engine.world import World

Read = Callable[[str, Callable[[], Any]], Any]
PROOFS_KEPT = 10_000  # the last proofs kept for reuse, per instance (a few hundred bytes each)


class Verifier:
    def __init__(self, world: World, opted_in: Callable[[AccountState], bool]) -> None:
        self.w = world
        self._opted_in = opted_in
        self._proofs: collections.OrderedDict[str, tuple[float, verification.Check]] = collections.OrderedDict()
        self._proofs_lock = threading.Lock()

    def verify(self, b: Binding, after: ReconcileResult | None = None) -> verification.VerificationReport:
        """`after`: a run that just ended `ready`. Its observations stand for the Azure side (it read
        and converged the identity, credential, role and service account moments ago), so only the
        pods are read; without it (the API), everything is read again."""
        report = verification.VerificationReport(b.key)
        checks = report.checks

        def read(name: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except TemporaryError as exc:
                checks.append(verification.Check(name, "pending", exc.reason, retry=True))
            except KeylessError as exc:
                checks.append(verification.Check(name, "fail", exc.reason))
            return None

        connection = self.w.reach.connect_known(b, prefetch=False)
        account = read("account", lambda: self.w.accounts.get(b.account))
        if after is not None and after.status == "ready" and after.identity:
            identity: IdentityState | None = _converged(after, checks)
        else:
            identity = self._azure_side(b, read, connection, checks)
        if account is not None:
            checks.append(verification.check_account(account))
        if self.w.settings.prove_access and identity is not None and account is not None:
            checks.append(self._proof(b, identity, account, connection, reuse=after is None))
        pods = read("pods", lambda: connection.call(lambda kube: kube.list_pods(b.cluster, b.namespace)))
        deployments = read(
            "pods",
            lambda: connection.call(
                lambda kube: kube.list_deployments(b.cluster, b.namespace, forbidden_is_empty=True)
            ),
        )
        if pods is not None and deployments is not None:
            checks += verification.check_pods(
                pods, b.service_account, identity, deployments, b.workloads, self.w.key_rules
            )
            report.keyless_account = {
                "account": str(b.account),
                "localAuthEnabled": None if account is None else not account.disable_local_auth,
                "optedIn": None if account is None else self._opted_in(account),
                "wouldBreak": verification.keyed_workloads(pods, self.w.key_rules),
            }
        return report

    def _proof(
        self, b: Binding, identity: IdentityState, account: AccountState, connection: ClusterConnection, reuse: bool
    ) -> verification.Check:
        """The access check. The API's (`reuse`): this instance's last API proof for the binding while it is
        younger than ACCESS_PROOF_REUSE_SECONDS, else a new one, kept. The worker's: always a new one
        (its re-checks are spaced already), not kept: the API never shows a worker's stale `pending`."""
        if not reuse:
            return self._prove(b, identity, account, connection)
        now = time.monotonic()
        with self._proofs_lock:
            last = self._proofs.get(b.key)
        if last is not None and now - last[0] < retry_policy.ACCESS_PROOF_REUSE_SECONDS:
            check = copy.deepcopy(last[1])
            check.evidence["reusedSeconds"] = round(now - last[0])
            return check
        check = self._prove(b, identity, account, connection)
        with self._proofs_lock:
            self._proofs[b.key] = (now, check)
            self._proofs.move_to_end(b.key)
            while len(self._proofs) > PROOFS_KEPT:
                self._proofs.popitem(last=False)
        return check

    def _prove(
        self, b: Binding, identity: IdentityState, account: AccountState, connection: ClusterConnection
    ) -> verification.Check:
        with telemetry.span("keyless.access", {"keyless.onboarding.id": b.key}) as span:
            check = prove_access(self.w, b, identity, account, connection)
            stage = str(check.evidence.get("stage", ""))
            span.set("keyless.access.status", check.status)
            span.set("keyless.access.stage", stage)
        telemetry.measure("keyless.access.proofs", status=check.status, stage=stage)
        return check

    def _azure_side(
        self, b: Binding, read: Read, connection: ClusterConnection, checks: list[verification.Check]
    ) -> IdentityState | None:
        """Identity, service account, federated credential and role assignment, all read again."""
        w = self.w
        sub, rg = w.identity_location(b)
        cluster = read("cluster", lambda: w.clusters.get(b.cluster))
        identity = read("identity", lambda: w.find_identity(b))
        foreign = None if identity is None else planner.identity_not_ours(identity, planner.identity_tags(b))
        if foreign is not None:
            checks.append(verification.Check("identity", "fail", foreign))
            identity = None
        if identity is None and not any(c.name == "identity" for c in checks):
            checks.append(verification.Check("identity", "fail", f"identity {b.identity_name} does not exist"))
        if identity is not None:
            checks.append(verification.Check("identity", "pass", evidence={"clientId": identity.client_id}))
        sa = read(
            "service-account",
            lambda: connection.call(
                lambda kube: kube.get_service_account(b.cluster, b.namespace, b.service_account), cluster
            ),
        )
        if not any(c.name == "service-account" for c in checks):
            checks.append(verification.check_service_account(sa, identity))
        if cluster is not None:
            creds = read(
                "federated-credential",
                lambda: [] if identity is None else w.identities.list_credentials(sub, rg, identity.name),
            )
            if creds is not None:
                checks.append(verification.check_credential(creds, identity, cluster.issuer_url, b.subject))
        scope = str(b.account)
        assignments = read(
            "role-assignment",
            lambda: (
                []
                if identity is None
                else w.roles.list_for_principal(b.account.subscription_id, scope, identity.principal_id)
            ),
        )
        if assignments is not None:
            checks.append(verification.check_role_assignment(assignments, identity, scope, b.role_definition_id))
        return identity  # type: ignore[no-any-return]


def _converged(after: ReconcileResult, checks: list[verification.Check]) -> IdentityState:
    """The Azure side as the run that just ended `ready` left it: passed, with its evidence."""
    identity = IdentityState(
        id=after.identity["resourceId"],
        name=after.identity["resourceId"].rstrip("/").rsplit("/", 1)[-1],  # a legacy name, maybe
        location="",
        client_id=after.identity["clientId"],
        principal_id=after.identity["principalId"],
        tenant_id=after.identity["tenantId"],
    )
    for name in ("identity", "federated-credential", "role-assignment", "service-account"):
        step = after.step(name)
        evidence = {"outcome": step.outcome, **step.details}
        if name == "federated-credential":
            evidence.update(after.credential)
        if name == "role-assignment" and after.role_assignment_id:
            evidence["id"] = after.role_assignment_id
        checks.append(verification.Check(name, "pass", "converged by this run", evidence))
    return identity
