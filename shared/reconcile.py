"""The reconcile engine: one binding, observed and converged, step by step.

Level-triggered and idempotent: every step reads what is there, asks the planner what to
do, and writes only the difference. Running it again after success writes nothing; running
it again after a crash at any point converges, because every name is deterministic.

Steps, in order (validate everything that can be validated before the first write):

    cluster → account → namespace → identity → federated-credential → role-assignment
            → service-account → configmap

Offboarding is the same engine with desired = absent, in reverse order.
A step that raises TemporaryError ends the run `not-yet` (retry after its delay);
PermanentError ends it `failed`. Later steps are reported `skipped`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from shared import naming, planner
from shared.adapters.accounts import AccountAdapter
from shared.adapters.arm import ArmClients
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.counting import counting
from shared.adapters.identities import IdentityAdapter
from shared.adapters.kube import KubeAdapter
from shared.adapters.roles import RoleAssignmentAdapter
from shared.binding import Binding
from shared.errors import PermanentError, TemporaryError
from shared.observed import AccountState, ClusterState, IdentityState
from shared.outcomes import Outcome, ReconcileResult, StepOutcome
from shared.settings import Settings

log = logging.getLogger("keyless.reconcile")

ONBOARD_STEPS = (
    "cluster",
    "account",
    "namespace",
    "identity",
    "federated-credential",
    "role-assignment",
    "service-account",
    "configmap",
)
OFFBOARD_STEPS = ("configmap", "service-account", "role-assignment", "federated-credential", "identity")

StepHook = Callable[[Binding, StepOutcome], None]


_PAST: dict[str, Outcome] = {"create": "created", "update": "updated", "unchanged": "unchanged"}


class _Stop(Exception):
    """Internal: a step ended the run (not-yet or failed)."""


@dataclasses.dataclass
class _Run:
    binding: Binding
    result: ReconcileResult
    on_step: StepHook | None
    dry_run: bool = False

    def record(self, step: str, outcome: Outcome, reason: str = "", **details: Any) -> None:
        entry = StepOutcome(step, outcome, reason, details={k: v for k, v in details.items() if v is not None})
        self._append(entry)

    def _append(self, entry: StepOutcome) -> None:
        self.result.steps.append(entry)
        log.info(
            "binding %s step %s: %s%s",
            self.result.binding_key,
            entry.step,
            entry.outcome,
            f" ({entry.reason})" if entry.reason else "",
        )
        if self.on_step is not None:
            self.on_step(self.binding, entry)

    def run(self, step: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except TemporaryError as exc:
            self._append(StepOutcome(step, "not-yet", exc.reason, delay_seconds=exc.delay_seconds))
            raise _Stop from exc
        except PermanentError as exc:
            self._append(StepOutcome(step, "failed", exc.reason))
            raise _Stop from exc

    def skip_rest(self, steps: Sequence[str]) -> None:
        done = {s.step for s in self.result.steps}
        for step in steps:
            if step not in done:
                self.result.steps.append(StepOutcome(step, "skipped"))


class Engine:
    """Reconciles bindings. Built once per process from settings and a credential."""

    def __init__(
        self,
        settings: Settings,
        clusters: ClusterAdapter,
        accounts: AccountAdapter,
        identities: IdentityAdapter,
        roles: RoleAssignmentAdapter,
        kube: KubeAdapter,
    ) -> None:
        self.settings = settings
        self.clusters = clusters
        self.accounts = accounts
        self.identities = identities
        self.roles = roles
        self.kube = kube

    @classmethod
    def from_settings(cls, settings: Settings, credential: Any) -> Engine:
        arm = ArmClients(credential, settings)
        clusters = ClusterAdapter(arm)
        return cls(
            settings,
            clusters,
            AccountAdapter(arm),
            IdentityAdapter(arm),
            RoleAssignmentAdapter(arm),
            KubeAdapter(credential, settings, clusters),
        )

    # --- where the identity lives -----------------------------------------------------------

    def identity_location(self, binding: Binding) -> tuple[str, str]:
        """(subscription, resource group) of the binding's identity: settings, else the cluster's."""
        return (
            self.settings.identity_subscription_id or binding.cluster.subscription_id,
            self.settings.identity_resource_group or binding.cluster.resource_group,
        )

    # --- onboarding -------------------------------------------------------------------------

    def reconcile(self, binding: Binding, on_step: StepHook | None = None, dry_run: bool = False) -> ReconcileResult:
        """Converge the binding to present. Never raises for Azure/Kubernetes conditions.

        With `dry_run`, only reads: each step reports what it would do (`created` = would create).
        """
        result = ReconcileResult(binding_key=binding.key, desired="present", dry_run=dry_run)
        run = _Run(binding, result, on_step, dry_run)
        with counting(result.requests):
            try:
                self._onboard(run)
            except _Stop:
                pass
            finally:
                run.skip_rest(ONBOARD_STEPS)
        return result

    def _onboard(self, run: _Run) -> None:
        b = run.binding
        cluster = run.run("cluster", lambda: self._cluster_step(run))
        account = run.run("account", lambda: self._account_step(run))
        run.run("namespace", lambda: self._namespace_step(run))
        identity = run.run("identity", lambda: self._identity_step(run, cluster))
        assert cluster.issuer_url is not None
        run.run("federated-credential", lambda: self._credential_step(run, identity, cluster.issuer_url or ""))
        run.run("role-assignment", lambda: self._role_step(run, identity))
        run.run("service-account", lambda: self._service_account_step(run, identity))
        run.run("configmap", lambda: self._configmap_step(run, account, identity))
        run.result.kube_objects = [
            f"{b.namespace}/serviceaccounts/{b.service_account}",
            f"{b.namespace}/configmaps/{b.configmap_name}",
        ]

    def _cluster_step(self, run: _Run) -> ClusterState:
        b = run.binding
        cluster = self.clusters.get(b.cluster)
        if planner.cluster_action(cluster, self.settings.enable_cluster_features) == "ready":
            run.record("cluster", "unchanged", issuer=cluster.issuer_url)
            return cluster
        if run.dry_run:
            run.record("cluster", "updated", "would enable OIDC issuer and workload identity (cluster update)")
            raise _Stop
        updated = self.clusters.enable_workload_identity(b.cluster, self.settings.cluster_update_wait_seconds)
        if updated is None:
            raise TemporaryError("enabling OIDC issuer and workload identity; the cluster update is running", 60)
        if planner.cluster_action(updated, enable_allowed=False) != "ready":
            raise TemporaryError("cluster updated but the OIDC issuer is not published yet", 30)
        self.kube.forget(b.cluster)  # enabling OIDC restarts the API server
        run.record("cluster", "updated", "enabled OIDC issuer and workload identity", issuer=updated.issuer_url)
        return updated

    def _account_step(self, run: _Run) -> AccountState:
        account = self.accounts.get(run.binding.account)
        planner.check_account(account)
        run.record("account", "unchanged", endpoint=account.endpoint, deployments=list(account.deployments))
        return account

    def _namespace_step(self, run: _Run) -> None:
        b = run.binding
        if self.kube.namespace_exists(b.cluster, b.namespace):
            run.record("namespace", "unchanged")
            return
        if not self.settings.create_namespaces:
            raise PermanentError(
                f"namespace {b.namespace!r} does not exist on the cluster; create it, "
                "or set KEYLESS_CREATE_NAMESPACES=true"
            )
        if not run.dry_run:
            self.kube.create_namespace(b.cluster, b.namespace)
        run.record("namespace", "created")

    def _identity_step(self, run: _Run, cluster: ClusterState) -> IdentityState:
        b = run.binding
        sub, rg = self.identity_location(b)
        observed = self.identities.get(sub, rg, b.identity_name)
        desired_tags = planner.identity_tags(b)
        action = planner.identity_action(observed, desired_tags)
        identity = observed
        location = observed.location if observed else cluster.location
        if run.dry_run and (action != "unchanged" or identity is None):
            identity = planner.planned_identity(observed, sub, rg, b.identity_name, location)
        elif action != "unchanged" or identity is None:
            identity = self.identities.create_or_update(
                sub, rg, b.identity_name, location, planner.merged_tags(observed, desired_tags)
            )
        run.result.identity = {
            "resourceId": identity.id,
            "clientId": identity.client_id,
            "principalId": identity.principal_id,
            "tenantId": identity.tenant_id,
        }
        run.record("identity", _PAST[action], name=identity.name)
        return identity

    def _credential_step(self, run: _Run, identity: IdentityState, issuer: str) -> None:
        b = run.binding
        sub, rg = self.identity_location(b)
        existing = [] if planner.is_planned(identity) else self.identities.list_credentials(sub, rg, identity.name)
        action, name = planner.credential_action(existing, b.credential_name, issuer, b.subject)
        if action in ("create", "update") and not run.dry_run:
            try:
                self.identities.put_credential(sub, rg, identity.name, name, issuer, b.subject)
            except PermanentError:
                # A racing writer may have created the same issuer+subject under another name
                # (Azure answers 400): look again before failing.
                again = self.identities.list_credentials(sub, rg, identity.name)
                action, name = planner.credential_action(again, b.credential_name, issuer, b.subject)
                if action != "adopt":
                    raise
        run.result.credential = {"name": name, "issuer": issuer, "subject": b.subject}
        run.record(
            "federated-credential",
            "unchanged" if action == "adopt" else _PAST[action],
            "adopted an existing credential with the same issuer and subject" if action == "adopt" else "",
            name=name,
        )

    def _role_step(self, run: _Run, identity: IdentityState) -> None:
        b = run.binding
        scope = str(b.account)
        sub = b.account.subscription_id
        existing = (
            [] if planner.is_planned(identity) else self.roles.list_for_principal(sub, scope, identity.principal_id)
        )
        action, found = planner.role_assignment_action(existing, scope, b.role_definition_id, identity.principal_id)
        if action == "unchanged" and found is not None:
            run.result.role_assignment_id = found.id
            run.record("role-assignment", "unchanged", name=found.name)
            return
        name = naming.role_assignment_name(scope, b.role_definition_id, identity.principal_id)
        if run.dry_run:
            run.record("role-assignment", "created", "would assign the role at the account scope")
            return
        created = self.roles.create(sub, scope, name, b.role_definition_id, identity.principal_id)
        if created is None:  # RoleAssignmentExists: present under another name
            run.record("role-assignment", "unchanged", "an equal role assignment exists under another name")
            return
        run.result.role_assignment_id = created.id
        run.record("role-assignment", "created", name=created.name)

    def _service_account_step(self, run: _Run, identity: IdentityState) -> None:
        b = run.binding
        desired = planner.service_account_annotations(identity)
        observed = self.kube.get_service_account(b.cluster, b.namespace, b.service_account)
        action = planner.kube_annotations_action(observed, desired)
        if action != "unchanged" and not run.dry_run:
            self.kube.apply_service_account(b.cluster, b.namespace, b.service_account, desired)
        run.record("service-account", _PAST[action])

    def _configmap_step(self, run: _Run, account: AccountState, identity: IdentityState) -> None:
        b = run.binding
        desired = planner.configmap_data(account, identity)
        observed = self.kube.get_configmap(b.cluster, b.namespace, b.configmap_name)
        action = planner.kube_data_action(observed, desired)
        if action != "unchanged" and not run.dry_run:
            labels = {"app.kubernetes.io/managed-by": "keyless", "keyless.io/binding": b.key[:63]}
            self.kube.apply_configmap(b.cluster, b.namespace, b.configmap_name, desired, labels)
        run.record("configmap", _PAST[action], name=b.configmap_name)

    # --- offboarding ------------------------------------------------------------------------

    def offboard(
        self, binding: Binding, others: Sequence[Binding] = (), on_step: StepHook | None = None
    ) -> ReconcileResult:
        """Converge the binding to absent: remove what Keyless made for it, in reverse order.

        `others` are the bindings still live; the identity, its credential and the service
        account annotations stay while another binding uses the same workload.
        """
        result = ReconcileResult(binding_key=binding.key, desired="absent")
        run = _Run(binding, result, on_step)
        shared_workload = planner.workload_still_bound(binding, list(others))
        with counting(result.requests):
            try:
                self._offboard(run, shared_workload)
            except _Stop:
                pass
            finally:
                run.skip_rest(OFFBOARD_STEPS)
        return result

    def _offboard(self, run: _Run, shared_workload: bool) -> None:
        b = run.binding
        sub, rg = self.identity_location(b)
        identity = run.run("identity", lambda: self.identities.get(sub, rg, b.identity_name))
        run.run("configmap", lambda: self._remove_configmap(run))
        if not shared_workload:
            run.run("service-account", lambda: self._release_service_account(run))
        else:
            run.record("service-account", "unchanged", "another binding uses this service account")
        run.run("role-assignment", lambda: self._remove_role_assignment(run, identity))
        if shared_workload:
            run.record("federated-credential", "unchanged", "another binding uses this identity")
            run.record("identity", "unchanged", "another binding uses this identity")
            return
        run.run("federated-credential", lambda: self._remove_credential(run, identity))
        run.run("identity", lambda: self._remove_identity(run, identity))

    def _kube_or_gone(self, run: _Run, step: str, fn: Callable[[], Outcome]) -> None:
        """Kubernetes cleanup; a deleted cluster has nothing left to clean."""
        try:
            outcome = fn()
        except PermanentError:
            try:
                self.clusters.get(run.binding.cluster)
            except PermanentError:
                run.record(step, "absent", "the cluster no longer exists")
                return
            raise
        run.record(step, outcome)

    def _remove_configmap(self, run: _Run) -> None:
        b = run.binding

        def remove() -> Outcome:
            observed = self.kube.get_configmap(b.cluster, b.namespace, b.configmap_name)
            if observed is None:
                return "absent"
            self.kube.delete_configmap(b.cluster, b.namespace, b.configmap_name)
            return "deleted"

        self._kube_or_gone(run, "configmap", remove)

    def _release_service_account(self, run: _Run) -> None:
        b = run.binding
        manager = self.settings.field_manager

        def release() -> Outcome:
            observed = self.kube.get_service_account(b.cluster, b.namespace, b.service_account)
            if observed is None or manager not in observed.managers:
                return "absent"
            if planner.owned_only_by(observed, manager):
                self.kube.delete_service_account(b.cluster, b.namespace, b.service_account)
                return "deleted"
            self.kube.apply_service_account(b.cluster, b.namespace, b.service_account, {})
            return "updated"

        self._kube_or_gone(run, "service-account", release)

    def _remove_role_assignment(self, run: _Run, identity: IdentityState | None) -> None:
        b = run.binding
        if identity is None:
            run.record("role-assignment", "absent", "no identity")
            return
        scope = str(b.account)
        name = naming.role_assignment_name(scope, b.role_definition_id, identity.principal_id)
        deleted = self.roles.delete(b.account.subscription_id, scope, name)
        run.record("role-assignment", "deleted" if deleted else "absent", name=name)

    def _remove_credential(self, run: _Run, identity: IdentityState | None) -> None:
        b = run.binding
        if identity is None:
            run.record("federated-credential", "absent", "no identity")
            return
        sub, rg = self.identity_location(b)
        existing = self.identities.list_credentials(sub, rg, identity.name)
        ours = [c for c in existing if c.name.lower() == b.credential_name.lower()]
        if not ours:
            run.record("federated-credential", "absent")
            return
        self.identities.delete_credential(sub, rg, identity.name, ours[0].name)
        run.record("federated-credential", "deleted", name=ours[0].name)

    def _remove_identity(self, run: _Run, identity: IdentityState | None) -> None:
        b = run.binding
        if identity is None:
            run.record("identity", "absent")
            return
        if identity.tags.get("managed-by") != planner.MANAGED_BY:
            run.record("identity", "unchanged", "not created by Keyless; left in place")
            return
        sub, rg = self.identity_location(b)
        # Credentials first (an identity holds at most 20); an adopted one goes with the identity.
        deleted = self.identities.delete(sub, rg, identity.name)
        run.record("identity", "deleted" if deleted else "absent", name=identity.name)
