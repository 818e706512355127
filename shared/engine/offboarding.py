"""Offboarding: one binding converged to absent, what Keyless made for it removed in reverse order.

Deployments first (they must stop naming the ConfigMap and the service account before those go),
then ConfigMap, ServiceAccount annotations, role assignment, federated credential, identity. When the
cluster is gone, its credential goes first (an identity holds at most 20). What another live binding
still uses stays. Ownership: a ServiceAccount or ConfigMap is deleted only when Keyless created it
(`keyless.io/created-by`); otherwise its fields are given back and the object stays. An identity that
is not this workload's, or that holds credentials Keyless did not make, is left in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from shared.domain import naming, planner, workloads
from shared.domain.errors import KeylessError, NotFoundError, PermanentError
from shared.domain.observed import IdentityState
from shared.domain.results import Outcome
from shared.engine.steps import DEPLOYMENT_STEP, Run
from shared.engine.workload_steps import WorkloadSteps
from shared.engine.world import World


class Offboarding:
    def __init__(self, world: World) -> None:
        self.w = world
        self.workloads = WorkloadSteps(world)

    def run(self, run: Run, shared_workload: bool, shared_configmap: bool) -> None:
        b = run.binding
        identity = run.run("identity", lambda: self.w.find_identity(b))
        # An identity under the workload's name that is not this workload's: nothing on it is ours to remove.
        foreign = None if identity is None else planner.identity_not_ours(identity, planner.identity_tags(b))
        try:
            self._cluster_exists(run)  # a deleted cluster's API server may still answer from a cache
        except KeylessError:
            run.cluster_gone = None  # unknown: the Kubernetes steps find out
        if run.cluster_gone and not shared_workload and foreign is None:
            # The cluster is gone: its credential goes first (an identity holds at most 20).
            run.run("federated-credential", lambda: self._remove_credential(run, identity))
        self._release_workloads(run)
        if shared_configmap:
            run.record("configmap", "unchanged", "another binding uses this config map", name=b.configmap_name)
        else:
            run.run("configmap", lambda: self._remove_configmap(run))
        if not shared_workload:
            run.run("service-account", lambda: self._release_service_account(run))
        else:
            run.record("service-account", "unchanged", "another binding uses this service account")
        if foreign is not None:
            for step in ("role-assignment", "federated-credential", "identity"):
                run.record(step, "unchanged", f"left in place: {foreign}")
            return
        run.run("role-assignment", lambda: self._remove_role_assignment(run, identity))
        if shared_workload:
            run.record("federated-credential", "unchanged", "another binding uses this identity")
            run.record("identity", "unchanged", "another binding uses this identity")
            return
        if not run.done("federated-credential"):
            run.run("federated-credential", lambda: self._remove_credential(run, identity))
        run.run("identity", lambda: self._remove_identity(run, identity))

    def _release_workloads(self, run: Run) -> None:
        """Give back our fields on every Deployment this binding enforced (named or labelled)."""
        b = run.binding
        first = DEPLOYMENT_STEP + (b.workloads[0] if b.workloads else "*")
        if run.cluster_gone:
            for name in b.workloads:
                run.record(DEPLOYMENT_STEP + name, "absent", "the cluster no longer exists")
            return

        def claimed() -> list[workloads.DeploymentState] | None:
            try:
                return run.connection.call(lambda _api: self.workloads.claimed(run), run.cluster)  # type: ignore[no-any-return]
            except PermanentError:
                if self._cluster_exists(run):
                    raise
                return None

        found = run.run(first, claimed)
        if found is None:
            for name in b.workloads:
                run.record(DEPLOYMENT_STEP + name, "absent", "the cluster no longer exists")
            return
        by_name = {d.name: d for d in found}
        for name in sorted(set(by_name) | set(b.workloads)):
            step = DEPLOYMENT_STEP + name
            if name in by_name:
                run.run(step, functools.partial(self.workloads.release, run, step, by_name[name], "offboarding"))
            else:
                run.record(step, "absent")

    def _cluster_exists(self, run: Run) -> bool:
        if run.cluster_gone is None:
            try:
                # offboarding is rare: ask ARM itself
                run.cluster = self.w.clusters.get(run.binding.cluster, fresh=True)
                run.cluster_gone = False
            except NotFoundError:
                run.cluster_gone = True
        return not run.cluster_gone

    def _kube_or_gone(self, run: Run, step: str, fn: Callable[[], tuple[Outcome, str]]) -> None:
        """Kubernetes cleanup; a deleted cluster has nothing left to clean."""
        if run.cluster_gone:
            run.record(step, "absent", "the cluster no longer exists")
            return
        try:
            outcome, reason = fn()
        except PermanentError:
            if not self._cluster_exists(run):
                run.record(step, "absent", "the cluster no longer exists")
                return
            raise
        run.record(step, outcome, reason)

    def _remove_configmap(self, run: Run) -> None:
        """Deleted only when Keyless created it; otherwise our keys are given back, the object stays."""
        b = run.binding

        def remove() -> tuple[Outcome, str]:
            observed = run.kube.get_configmap(b.cluster, b.namespace, b.configmap_name)
            action = planner.release_action(observed, self.w.settings.field_manager, b.key)
            if action == "absent":
                return "absent", ""
            if action == "leave":
                return "unchanged", "not created by Keyless and holds nothing of Keyless's; left in place"
            if action == "delete":
                run.kube.delete_configmap(b.cluster, b.namespace, b.configmap_name)
                return "deleted", ""
            run.kube.apply_configmap(b.cluster, b.namespace, b.configmap_name, {}, {})
            return "updated", "Keyless's keys given back; the config map stays"

        self._kube_or_gone(run, "configmap", remove)

    def _release_service_account(self, run: Run) -> None:
        """Deleted only when Keyless created it (the marker) and no one else writes to it; otherwise
        our annotations are given back (an empty apply under our field manager)."""
        b = run.binding

        def release() -> tuple[Outcome, str]:
            observed = run.kube.get_service_account(b.cluster, b.namespace, b.service_account)
            action = planner.release_action(observed, self.w.settings.field_manager)
            if action in ("absent", "leave"):
                return "absent", ""
            if action == "delete":
                run.kube.delete_service_account(b.cluster, b.namespace, b.service_account)
                return "deleted", ""
            run.kube.apply_service_account(b.cluster, b.namespace, b.service_account, {})
            return "updated", "annotations given back; the service account stays"

        self._kube_or_gone(run, "service-account", release)

    def _remove_role_assignment(self, run: Run, identity: IdentityState | None) -> None:
        b = run.binding
        if identity is None:
            run.record("role-assignment", "absent", "no identity")
            return
        scope = str(b.account)
        name = naming.role_assignment_name(scope, b.role_definition_id, identity.principal_id)
        deleted = self.w.roles.delete(b.account.subscription_id, scope, name)
        run.record("role-assignment", "deleted" if deleted else "absent", name=name)

    def _remove_credential(self, run: Run, identity: IdentityState | None) -> None:
        b, w = run.binding, self.w
        if identity is None:
            run.record("federated-credential", "absent", "no identity")
            return
        sub, rg = w.identity_location(b)
        existing = w.identities.list_credentials(sub, rg, identity.name)
        issuer = run.cluster.issuer_url if run.cluster is not None and not run.cluster_gone else None
        ours, run.other_credentials = planner.split_credentials(existing, b.credential_name, b.subject, issuer)
        if not ours:
            run.record("federated-credential", "absent")
            return
        for cred in ours:  # ours, and one adopted under another name
            w.identities.delete_credential(sub, rg, identity.name, cred.name)
        run.record("federated-credential", "deleted", name=", ".join(c.name for c in ours))

    def _remove_identity(self, run: Run, identity: IdentityState | None) -> None:
        b, w = run.binding, self.w
        if identity is None:
            run.record("identity", "absent")
            return
        sub, rg = w.identity_location(b)
        others = run.other_credentials
        if others is None:
            _, others = planner.split_credentials(
                w.identities.list_credentials(sub, rg, identity.name), b.credential_name, b.subject, None
            )
        if others:
            names = ", ".join(f"{c.name} (subject {c.subject})" for c in others)
            reason = f"left in place: it holds federated credentials Keyless did not make: {names}"
            run.record("identity", "unchanged", reason, name=identity.name)
            return
        deleted = w.identities.delete(sub, rg, identity.name)
        run.record("identity", "deleted" if deleted else "absent", name=identity.name)
