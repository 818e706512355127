"""Offboarding: one binding converged to absent. Azure's side first, whatever the cluster answers.

    role-assignment → federated-credential → identity → deployment/<name>... → configmap → service-account

Revocation must not wait for the one losing access: a namespace admin can make every Kubernetes
request there answer 403, a private cluster's owner can switch run command off. So the role
assignment goes first, then the federated credential, then the identity; which of them are
Keyless's its own record says (shared.domain.revocation: the recorded principal and origin), not the
identity's tags, which others can rewrite. A role assignment that could not be deleted stops the run
(the binding is not `removed`, and is tried again); the credential still goes then (without it no
token is issued). The cluster's side follows, best effort: Deployments first (they must stop naming
the ConfigMap and the service account before those go), then ConfigMap and ServiceAccount; a step
refused there (403, run command disabled) is recorded `left` with its object, and the run goes on
(ReconcileResult.leftovers); one that may pass later (unreachable, 5xx) is `not-yet` and runs again,
with Azure's access already gone.

What another live binding still uses stays. Ownership: a ServiceAccount or ConfigMap is deleted only
when Keyless created it (`keyless.io/created-by`); otherwise its fields are given back and the object
stays. An identity that is not Keyless's, or that holds credentials Keyless did not make, stays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from shared.domain import planner, revocation, workloads
from shared.domain.errors import KeylessError, NotFoundError, PermanentError
from shared.domain.observed import IdentityState
from shared.domain.results import Outcome
from shared.domain.revocation import IdentityVerdict, Made
from shared.engine.steps import DEPLOYMENT_STEP, Run, Stop
from shared.engine.workload_steps import WorkloadSteps
from shared.engine.world import World


class Offboarding:
    def __init__(self, world: World) -> None:
        self.w = world
        self.workloads = WorkloadSteps(world)

    def run(self, run: Run, shared_workload: bool, shared_configmap: bool, made: Made | None = None) -> None:
        self._revoke(run, shared_workload, made or Made())
        self._clean_cluster(run, shared_workload, shared_configmap)

    def _revoke(self, run: Run, shared_workload: bool, made: Made) -> None:
        """Azure's side: role assignment, federated credential, identity (ARM only, never the cluster)."""
        b = run.binding
        identity = run.run("identity", lambda: self._find_identity(run, made))
        verdict = revocation.judge_identity(identity, made, planner.identity_tags(b))
        try:
            self._cluster_exists(run)  # its issuer tells an adopted credential; a deleted cluster's is any
        except KeylessError:
            run.cluster_gone = None  # unknown: the Kubernetes steps find out
        try:
            run.run("role-assignment", lambda: self._remove_role_assignment(run, identity, verdict, made))
        except Stop:
            if not shared_workload:  # no credential, no token: the access ends even while the assignment stays
                run.run("federated-credential", lambda: self._remove_credential(run, identity, verdict))
            raise
        if shared_workload:
            run.record("federated-credential", "unchanged", "another binding uses this identity")
            run.record("identity", "unchanged", "another binding uses this identity")
            return
        run.run("federated-credential", lambda: self._remove_credential(run, identity, verdict))
        run.run("identity", lambda: self._remove_identity(run, identity, verdict))

    def _find_identity(self, run: Run, made: Made) -> IdentityState | None:
        """The identity the record names (wherever it is, whatever its tags say); else the one under
        the binding's name (shared.engine.world.World.find_identity)."""
        recorded = made.identity_resource()
        if recorded is not None:
            return self.w.identities.get(recorded.subscription_id, recorded.resource_group, recorded.name)
        return self.w.find_identity(run.binding)

    def _clean_cluster(self, run: Run, shared_workload: bool, shared_configmap: bool) -> None:
        """The cluster's side, best effort: what was refused is recorded, not a stop."""
        b = run.binding
        self._release_workloads(run)
        if shared_configmap:
            run.record("configmap", "unchanged", "another binding uses this config map", name=b.configmap_name)
        else:
            run.run("configmap", lambda: self._remove_configmap(run), f"configmap {b.namespace}/{b.configmap_name}")
        if not shared_workload:
            what = f"serviceaccount {b.namespace}/{b.service_account}"
            run.run("service-account", lambda: self._release_service_account(run), what)
        else:
            run.record("service-account", "unchanged", "another binding uses this service account")

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

        where = f"deployment {b.namespace}/{b.workloads[0]}" if b.workloads else f"deployments in {b.namespace}"
        found = run.run(first, claimed, where)
        left = run.left(first)
        if left is not None:  # the list was refused: each named Deployment stays as it is
            for name in b.workloads[1:]:
                step = DEPLOYMENT_STEP + name
                run.record(step, "left", left.reason, object=f"deployment {b.namespace}/{name}")
            return
        if found is None:
            for name in b.workloads:
                run.record(DEPLOYMENT_STEP + name, "absent", "the cluster no longer exists")
            return
        by_name = {d.name: d for d in found}
        for name in sorted(set(by_name) | set(b.workloads)):
            step = DEPLOYMENT_STEP + name
            if name in by_name:
                release = functools.partial(self.workloads.release, run, step, by_name[name], "offboarding")
                run.run(step, release, f"deployment {b.namespace}/{name}")
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
        try:  # an API server that does not answer: run command, or why not (a refusal: a leftover)
            outcome, reason = run.connection.call(lambda _api: fn(), run.cluster)
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

    def _remove_role_assignment(
        self, run: Run, identity: IdentityState | None, verdict: IdentityVerdict, made: Made
    ) -> None:
        """The role assignments Keyless made for the binding (revocation.role_assignments_to_remove)."""
        b = run.binding
        scope = str(b.account)
        names = revocation.role_assignments_to_remove(made, scope, b.role_definition_id, verdict.principal_id)
        if not names:
            if identity is None:
                run.record("role-assignment", "absent", "no identity")
            else:
                run.record("role-assignment", "unchanged", verdict.keep_reason or "")
            return
        deleted = [name for name in names if self.w.roles.delete(b.account.subscription_id, scope, name)]
        run.record("role-assignment", "deleted" if deleted else "absent", name=", ".join(deleted or names))

    def _remove_credential(self, run: Run, identity: IdentityState | None, verdict: IdentityVerdict) -> None:
        b, w = run.binding, self.w
        if identity is None:
            run.record("federated-credential", "absent", "no identity")
            return
        if not verdict.credentials:
            run.record("federated-credential", "unchanged", verdict.keep_reason or "")
            return
        sub, rg = _location(identity)
        existing = w.identities.list_credentials(sub, rg, identity.name)
        issuer = run.cluster.issuer_url if run.cluster is not None and not run.cluster_gone else None
        ours, run.other_credentials = planner.split_credentials(existing, b.credential_name, b.subject, issuer)
        if not ours:
            run.record("federated-credential", "absent")
            return
        for cred in ours:  # ours, and one adopted under another name
            w.identities.delete_credential(sub, rg, identity.name, cred.name)
        run.record("federated-credential", "deleted", name=", ".join(c.name for c in ours))

    def _remove_identity(self, run: Run, identity: IdentityState | None, verdict: IdentityVerdict) -> None:
        b, w = run.binding, self.w
        if identity is None:
            run.record("identity", "absent")
            return
        if verdict.keep_reason is not None:
            run.record("identity", "unchanged", verdict.keep_reason, name=identity.name)
            return
        sub, rg = _location(identity)
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


def _location(identity: IdentityState) -> tuple[str, str]:
    """(subscription, resource group) of an identity ARM returned."""
    parts = identity.id.strip("/").split("/")
    return parts[1], parts[3]
