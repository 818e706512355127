"""The reconcile engine: one binding, observed and converged, step by step.

Level-triggered and idempotent: every step reads what is there, asks the planner what to
do, and writes only the difference. Running it again after success writes nothing; running
it again after a crash at any point converges, because every name is deterministic.

Steps, in order (validate everything that can be validated before the first write):

    cluster → account → namespace → identity → federated-credential → role-assignment
            → service-account → configmap → deployment/<name>... (the binding's workloads)

Offboarding is the same engine with desired = absent, in reverse order (Deployments first: they
must stop naming the ConfigMap and the service account before those go; when the cluster is gone,
the federated credential goes first, for an identity holds at most 20).
`verify` reads everything again and reports check by check (shared.domain.verification); it writes nothing.
A private cluster whose API server is unreachable is worked through the AKS run-command API
(shared.adapters.runcommand) when KEYLESS_RUN_COMMAND_FALLBACK allows, with the same decisions.
A step that raises TemporaryError ends the run `not-yet` (retry after its delay);
PermanentError ends it `failed`. Later steps are reported `skipped`.

Ownership (decided in shared.domain.planner): an identity is used, and deleted, only when its
`keyless-workload` tag names this workload; a ServiceAccount annotation another field manager set
to another value is never overwritten unless the object carries `keyless.io/adopt: "true"`; a
ServiceAccount or ConfigMap is deleted only when Keyless created it (`keyless.io/created-by`),
otherwise offboarding gives back Keyless's fields and leaves the object.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared.adapters.account_auth import AccountAuthAdapter
from shared.adapters.accounts import AccountAdapter
from shared.adapters.arm import ArmClients
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.counting import counting
from shared.adapters.identities import IdentityAdapter
from shared.adapters.kube import KubeAdapter, KubeUnreachable
from shared.adapters.roles import RoleAssignmentAdapter
from shared.adapters.runcommand import RunCommandAdapter, RunCommandKube
from shared.domain import naming, planner, verification, workloads
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, NotFoundError, PermanentError, TemporaryError
from shared.domain.ids import ResourceId
from shared.domain.observed import AccountState, ClusterState, CredentialState, IdentityState
from shared.domain.results import Outcome, ReconcileResult, StepOutcome
from shared.domain.settings import Settings

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
DEPLOYMENT_STEP = "deployment/"
KEYLESS_ENFORCE_TAG = "keyless-enforce"
NOT_DEPLOYED_DELAY = 300.0


def onboard_steps(binding: Binding) -> tuple[str, ...]:
    return ONBOARD_STEPS + tuple(DEPLOYMENT_STEP + name for name in binding.workloads)


def offboard_steps(binding: Binding) -> tuple[str, ...]:
    return tuple(DEPLOYMENT_STEP + name for name in binding.workloads) + OFFBOARD_STEPS


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
    cluster_gone: bool | None = None  # learnt while offboarding: None = not asked yet
    kube: Any = None  # the KubeAdapter, or RunCommandKube for a private cluster Keyless cannot reach
    cluster: ClusterState | None = None
    other_credentials: list[CredentialState] | None = None  # offboarding: credentials that are not ours

    def done(self, step: str) -> bool:
        return any(s.step == step for s in self.result.steps)

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
        account_auth: AccountAuthAdapter | None = None,
        run_command: RunCommandAdapter | None = None,
    ) -> None:
        self.settings = settings
        self.clusters = clusters
        self.accounts = accounts
        self.identities = identities
        self.roles = roles
        self.kube = kube
        self.account_auth = account_auth
        self.run_command = run_command
        self.key_rules = workloads.ApiKeyRules.from_settings(settings)
        self._unreachable: dict[str, float] = {}  # private clusters reached through run command, until
        self._lock = threading.Lock()

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
            AccountAuthAdapter(arm),
            RunCommandAdapter(arm, credential, settings),
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
        run = _Run(binding, result, on_step, dry_run, kube=self.kube)
        with counting(result.requests):
            try:
                self._onboard(run)
            except _Stop:
                pass
            finally:
                run.skip_rest(onboard_steps(binding))
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
        data = run.run("configmap", lambda: self._configmap_step(run, account, identity))
        run.result.kube_objects = [
            f"{b.namespace}/serviceaccounts/{b.service_account}",
            f"{b.namespace}/configmaps/{b.configmap_name}",
        ]
        self._workloads(run, data, identity)

    def _cluster_step(self, run: _Run) -> ClusterState:
        b = run.binding
        cluster = self.clusters.get(b.cluster)
        run.cluster = cluster
        if planner.cluster_action(cluster, self.settings.enable_cluster_features) == "ready":
            if self._known_unreachable(cluster):
                run.kube = self._run_command_kube(run, cluster)
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
        if self._through(run, lambda kube: kube.namespace_exists(b.cluster, b.namespace)):
            run.record("namespace", "unchanged")
            return
        if not self.settings.create_namespaces:
            raise PermanentError(
                f"namespace {b.namespace!r} does not exist on the cluster; create it, "
                "or set KEYLESS_CREATE_NAMESPACES=true"
            )
        if not run.dry_run:
            run.kube.create_namespace(b.cluster, b.namespace)
        run.record("namespace", "created")

    def _find_identity(self, b: Binding) -> IdentityState | None:
        """The identity under the binding's name, whoever made it (the planner judges); when there is
        none, one under its legacy name (10 hex digits) if tagged for this workload. The extra read is
        paid only while the name of now is absent."""
        sub, rg = self.identity_location(b)
        found = self.identities.get(sub, rg, b.identity_name)
        if found is not None:
            return found
        legacy = naming.legacy_identity_name(b.cluster.name, b.cluster.key, b.namespace, b.service_account)
        return planner.legacy_identity(self.identities.get(sub, rg, legacy), planner.identity_tags(b))

    def _identity_step(self, run: _Run, cluster: ClusterState) -> IdentityState:
        b = run.binding
        sub, rg = self.identity_location(b)
        observed = self._find_identity(b)
        desired_tags = planner.identity_tags(b)
        action = planner.identity_action(observed, desired_tags)
        identity = observed
        name = observed.name if observed else b.identity_name
        location = observed.location if observed else cluster.location
        if run.dry_run and (action != "unchanged" or identity is None):
            identity = planner.planned_identity(observed, sub, rg, name, location)
        elif action != "unchanged" or identity is None:
            identity = self.identities.create_or_update(
                sub, rg, name, location, planner.merged_tags(observed, desired_tags)
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
        action, name = planner.credential_action(existing, b.credential_name, issuer, b.subject, identity.name, rg)
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
        observed = run.kube.get_service_account(b.cluster, b.namespace, b.service_account)
        plan = planner.service_account_plan(observed, identity, self.settings.field_manager)
        if plan.action != "unchanged" and not run.dry_run:
            run.kube.apply_service_account(b.cluster, b.namespace, b.service_account, plan.annotations, plan.force)
        run.record("service-account", _PAST[plan.action])

    def _configmap_step(self, run: _Run, account: AccountState, identity: IdentityState) -> dict[str, str]:
        b = run.binding
        desired = planner.configmap_data(account, identity)
        observed = run.kube.get_configmap(b.cluster, b.namespace, b.configmap_name)
        plan = planner.configmap_plan(observed, desired, b, self.settings.field_manager)
        if plan.action != "unchanged" and not run.dry_run:
            run.kube.apply_configmap(
                b.cluster, b.namespace, b.configmap_name, desired, plan.labels, plan.annotations, plan.force
            )
        run.record("configmap", _PAST[plan.action], name=b.configmap_name)
        return desired

    # --- private clusters: the run-command fallback ------------------------------------------

    def _through(self, run: _Run, fn: Callable[[Any], Any]) -> Any:
        """A first Kubernetes call of the run; when the API server is unreachable and the cluster
        is private, the run goes on through the run-command API (or fails, saying why)."""
        try:
            return fn(run.kube)
        except KubeUnreachable as exc:
            if isinstance(run.kube, RunCommandKube):
                raise
            cluster = run.cluster or self.clusters.get(run.binding.cluster)
            run.kube = self._fallback(run, cluster, exc)
            return fn(run.kube)

    def _fallback(self, run: _Run, cluster: ClusterState, exc: KubeUnreachable) -> RunCommandKube:
        if not cluster.private:
            raise exc
        if not self.settings.run_command_fallback:
            raise PermanentError(
                "the cluster is private and its API server is not reachable from Keyless; give the app a "
                "network path to it (VNet integration and the private DNS zone), or set "
                "KEYLESS_RUN_COMMAND_FALLBACK=true to go through the AKS run-command API"
            ) from exc
        if cluster.run_command_disabled or self.run_command is None:
            raise PermanentError(
                "the cluster is private, its API server is not reachable from Keyless, and run command is "
                "disabled on it (apiServerAccessProfile.disableRunCommand); give the app a network path to it"
            ) from exc
        self._remember_unreachable(cluster)
        log.info("cluster %s is private and unreachable: going through run command", cluster.name)
        return self._run_command_kube(run, cluster)

    def _remember_unreachable(self, cluster: ClusterState) -> None:
        """Go through run command for this cluster until its connection details are read again."""
        with self._lock:
            self._unreachable[cluster.id.lower()] = time.monotonic() + self.settings.kube_credentials_ttl_seconds

    def _known_unreachable(self, cluster: ClusterState) -> bool:
        with self._lock:
            until = self._unreachable.get(cluster.id.lower(), 0.0)
        return cluster.private and until > time.monotonic() and self.run_command is not None

    def _run_command_kube(self, run: _Run, cluster: ClusterState) -> RunCommandKube:
        assert self.run_command is not None
        kube = RunCommandKube(self.run_command, cluster, self.settings)
        b = run.binding
        kube.prefetch(b.cluster, b.namespace, {"ServiceAccount": b.service_account, "ConfigMap": b.configmap_name})
        return kube

    # --- workloads --------------------------------------------------------------------------

    def _claimed(self, run: _Run) -> list[workloads.DeploymentState]:
        """Deployments this binding enforces (labelled with its key): one list call."""
        b = run.binding
        return run.kube.list_deployments(
            b.cluster,
            b.namespace,
            f"{workloads.BINDING_LABEL}={b.key[:63]}",
            forbidden_is_empty=not b.workloads,
        )

    def _workloads(self, run: _Run, data: dict[str, str], identity: IdentityState) -> None:
        """Each named Deployment patched; Deployments no longer named released. A step per Deployment."""
        b = run.binding
        first = DEPLOYMENT_STEP + (b.workloads[0] if b.workloads else "*")
        claimed = {d.name: d for d in run.run(first, lambda: self._claimed(run))}
        for name in b.workloads:
            step = functools.partial(self._deployment_step, run, name, claimed, data, identity)
            run.run(DEPLOYMENT_STEP + name, step)
        for name in sorted(set(claimed) - set(b.workloads)):
            release = functools.partial(self._release, run, DEPLOYMENT_STEP + name, claimed[name], "no longer named")
            run.run(DEPLOYMENT_STEP + name, release)
        run.result.kube_objects += [f"{b.namespace}/deployments/{n}" for n in b.workloads]

    def _deployment_step(
        self,
        run: _Run,
        name: str,
        claimed: dict[str, workloads.DeploymentState],
        data: dict[str, str],
        identity: IdentityState,
    ) -> None:
        b = run.binding
        step = DEPLOYMENT_STEP + name
        deploy = claimed.get(name) or run.kube.get_deployment(b.cluster, b.namespace, name)
        if deploy is None:
            raise TemporaryError(
                f"deployment {name} not found in namespace {b.namespace}; waiting for it to be deployed",
                NOT_DEPLOYED_DELAY,
            )
        args: dict[str, Any] = {
            "binding_key": b.key,
            "service_account": b.service_account,
            "configmap": b.configmap_name,
            "configmap_data": data,
            "client_id": identity.client_id,
            "manager": self.settings.field_manager,
            "rules": self.key_rules,
        }
        plan = workloads.plan_deployment(deploy, **args)
        if not plan.changes:
            run.record(step, "unchanged")
            return
        if run.dry_run:
            run.record(step, "updated", "would " + "; ".join(plan.reasons), **plan.details())
            return
        done = workloads.WorkloadPlan(name, apply=plan.apply, restart=plan.restart, reasons=list(plan.reasons))
        if plan.apply is not None:
            deploy = run.kube.apply_deployment(b.cluster, b.namespace, plan.apply)
        # Indexes are those of the object as it is now (the apply may have added items).
        targets = [
            c["name"] for c in workloads.desired_config(deploy, **args)["spec"]["template"]["spec"]["containers"]
        ]
        done.json_patch, done.removed = workloads.removals(deploy, self.key_rules, b.configmap_name, data, targets)
        if done.json_patch:
            run.kube.json_patch_deployment(b.cluster, b.namespace, name, done.json_patch)
            if not plan.removed:
                done.reasons.append(
                    "removed " + ", ".join(f"{r['variable']} from {r['container']}" for r in done.removed)
                )
        run.record(step, "updated", "; ".join(done.reasons), **done.details())

    def _release(self, run: _Run, step: str, deploy: workloads.DeploymentState, why: str) -> None:
        plan = workloads.plan_release(deploy, self.settings.field_manager)
        if plan.apply is None:
            run.record(step, "unchanged", why)
            return
        if not run.dry_run:
            run.kube.apply_deployment(run.binding.cluster, run.binding.namespace, plan.apply)
        run.record(step, "updated", f"{why}: " + "; ".join(plan.reasons), **plan.details())

    # --- offboarding ------------------------------------------------------------------------

    def offboard(
        self, binding: Binding, others: Sequence[Binding] = (), on_step: StepHook | None = None
    ) -> ReconcileResult:
        """Converge the binding to absent: remove what Keyless made for it, in reverse order.

        `others` are the bindings still live; the identity, its credential and the service
        account annotations stay while another binding uses the same workload.
        """
        result = ReconcileResult(binding_key=binding.key, desired="absent")
        run = _Run(binding, result, on_step, kube=self.kube)
        shared_workload = planner.workload_still_bound(binding, list(others))
        shared_configmap = planner.configmap_still_used(binding, list(others))
        with counting(result.requests):
            try:
                self._offboard(run, shared_workload, shared_configmap)
            except _Stop:
                pass
            finally:
                run.skip_rest(offboard_steps(binding))
        return result

    def _offboard(self, run: _Run, shared_workload: bool, shared_configmap: bool) -> None:
        b = run.binding
        identity = run.run("identity", lambda: self._find_identity(b))
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

    def _release_workloads(self, run: _Run) -> None:
        """Give back our fields on every Deployment this binding enforced (named or labelled)."""
        b = run.binding
        first = DEPLOYMENT_STEP + (b.workloads[0] if b.workloads else "*")
        if run.cluster_gone:
            for name in b.workloads:
                run.record(DEPLOYMENT_STEP + name, "absent", "the cluster no longer exists")
            return

        def claimed() -> list[workloads.DeploymentState] | None:
            try:
                return self._through(run, lambda _kube: self._claimed(run))
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
                run.run(step, functools.partial(self._release, run, step, by_name[name], "offboarding"))
            else:
                run.record(step, "absent")

    def _cluster_exists(self, run: _Run) -> bool:
        if run.cluster_gone is None:
            try:
                # offboarding is rare: ask ARM itself
                run.cluster = self.clusters.get(run.binding.cluster, fresh=True)
                run.cluster_gone = False
            except NotFoundError:
                run.cluster_gone = True
        return not run.cluster_gone

    def _kube_or_gone(self, run: _Run, step: str, fn: Callable[[], tuple[Outcome, str]]) -> None:
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

    def _remove_configmap(self, run: _Run) -> None:
        """Deleted only when Keyless created it; otherwise our keys are given back, the object stays."""
        b = run.binding

        def remove() -> tuple[Outcome, str]:
            observed = run.kube.get_configmap(b.cluster, b.namespace, b.configmap_name)
            action = planner.release_action(observed, self.settings.field_manager, b.key)
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

    def _release_service_account(self, run: _Run) -> None:
        """Deleted only when Keyless created it (the marker) and no one else writes to it; otherwise
        our annotations are given back (an empty apply under our field manager)."""
        b = run.binding

        def release() -> tuple[Outcome, str]:
            observed = run.kube.get_service_account(b.cluster, b.namespace, b.service_account)
            action = planner.release_action(observed, self.settings.field_manager)
            if action in ("absent", "leave"):
                return "absent", ""
            if action == "delete":
                run.kube.delete_service_account(b.cluster, b.namespace, b.service_account)
                return "deleted", ""
            run.kube.apply_service_account(b.cluster, b.namespace, b.service_account, {})
            return "updated", "annotations given back; the service account stays"

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
        issuer = run.cluster.issuer_url if run.cluster is not None and not run.cluster_gone else None
        ours, run.other_credentials = planner.split_credentials(existing, b.credential_name, b.subject, issuer)
        if not ours:
            run.record("federated-credential", "absent")
            return
        for cred in ours:  # ours, and one adopted under another name
            self.identities.delete_credential(sub, rg, identity.name, cred.name)
        run.record("federated-credential", "deleted", name=", ".join(c.name for c in ours))

    def _remove_identity(self, run: _Run, identity: IdentityState | None) -> None:
        b = run.binding
        if identity is None:
            run.record("identity", "absent")
            return
        sub, rg = self.identity_location(b)
        others = run.other_credentials
        if others is None:
            _, others = planner.split_credentials(
                self.identities.list_credentials(sub, rg, identity.name), b.credential_name, b.subject, None
            )
        if others:
            names = ", ".join(f"{c.name} (subject {c.subject})" for c in others)
            reason = f"left in place: it holds federated credentials Keyless did not make: {names}"
            run.record("identity", "unchanged", reason, name=identity.name)
            return
        deleted = self.identities.delete(sub, rg, identity.name)
        run.record("identity", "deleted" if deleted else "absent", name=identity.name)

    # --- verification -----------------------------------------------------------------------

    def verify(self, binding: Binding, after: ReconcileResult | None = None) -> verification.VerificationReport:
        """Check that the binding really works keyless. Reads only; a read that fails becomes a
        `pending` (temporary) or `fail` (permanent) check.

        `after`: a run that just ended `ready`. Its observations stand for the Azure side (it read
        and converged the identity, credential, role and service account moments ago), so only the
        pods are read; without it (the API), everything is read again."""
        b = binding
        report = verification.VerificationReport(b.key)
        checks = report.checks
        kubes = [self._verification_kube(b)]

        def through(fn: Callable[[Any], Any]) -> Any:
            """A Kubernetes read; a private cluster this process has not met goes through run command."""
            try:
                return fn(kubes[-1])
            except KubeUnreachable as exc:
                if isinstance(kubes[-1], RunCommandKube):
                    raise
                kubes.append(self._verification_fallback(b, exc))
                return fn(kubes[-1])

        def read(name: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except TemporaryError as exc:
                checks.append(verification.Check(name, "pending", exc.reason, retry=True))
            except KeylessError as exc:
                checks.append(verification.Check(name, "fail", exc.reason))
            return None

        account = read("account", lambda: self.accounts.get(b.account))
        if after is not None and after.status == "ready" and after.identity:
            identity: IdentityState | None = IdentityState(
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
        else:
            identity = self._verify_azure_side(b, read, through, checks)
        if account is not None:
            checks.append(verification.check_account(account))
        pods = read("pods", lambda: through(lambda kube: kube.list_pods(b.cluster, b.namespace)))
        deployments = read(
            "pods", lambda: through(lambda kube: kube.list_deployments(b.cluster, b.namespace, forbidden_is_empty=True))
        )
        if pods is not None and deployments is not None:
            checks += verification.check_pods(
                pods, b.service_account, identity, deployments, b.workloads, self.key_rules
            )
            report.keyless_account = {
                "account": str(b.account),
                "localAuthEnabled": None if account is None else not account.disable_local_auth,
                "optedIn": None if account is None else self.keyless_opt_in(account),
                "wouldBreak": verification.keyed_workloads(pods, self.key_rules),
            }
        return report

    def _verification_kube(self, b: Binding) -> Any:
        """The cluster's API server, or the run-command API for a private cluster known unreachable."""
        with self._lock:
            known = self._unreachable.get(b.cluster.key.lower(), 0.0) > time.monotonic()
        if known and self.run_command is not None:
            return RunCommandKube(self.run_command, self.clusters.get(b.cluster), self.settings)
        return self.kube

    def _verification_fallback(self, b: Binding, exc: KubeUnreachable) -> RunCommandKube:
        """A private cluster this process has not met yet: the run-command API, as a run would."""
        cluster = self.clusters.get(b.cluster)
        if not (cluster.private and self.settings.run_command_fallback and not cluster.run_command_disabled):
            raise exc
        if self.run_command is None:
            raise exc
        self._remember_unreachable(cluster)
        return RunCommandKube(self.run_command, cluster, self.settings)

    def _verify_azure_side(
        self,
        b: Binding,
        read: Callable[[str, Callable[[], Any]], Any],
        through: Callable[[Callable[[Any], Any]], Any],
        checks: list[verification.Check],
    ) -> IdentityState | None:
        """Identity, service account, federated credential and role assignment, all read again."""
        sub, rg = self.identity_location(b)
        cluster = read("cluster", lambda: self.clusters.get(b.cluster))
        identity = read("identity", lambda: self._find_identity(b))
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
            lambda: through(lambda kube: kube.get_service_account(b.cluster, b.namespace, b.service_account)),
        )
        if not any(c.name == "service-account" for c in checks):
            checks.append(verification.check_service_account(sa, identity))
        if cluster is not None:
            creds = read(
                "federated-credential",
                lambda: [] if identity is None else self.identities.list_credentials(sub, rg, identity.name),
            )
            if creds is not None:
                checks.append(verification.check_credential(creds, identity, cluster.issuer_url, b.subject))
        scope = str(b.account)
        assignments = read(
            "role-assignment",
            lambda: (
                []
                if identity is None
                else self.roles.list_for_principal(b.account.subscription_id, scope, identity.principal_id)
            ),
        )
        if assignments is not None:
            checks.append(verification.check_role_assignment(assignments, identity, scope, b.role_definition_id))
        return identity  # type: ignore[no-any-return]

    # --- keyless accounts -------------------------------------------------------------------

    def keyless_opt_in(self, account: AccountState) -> bool:
        """Tag `keyless-enforce=true` on the account, or KEYLESS_ENFORCE_KEYLESS_ACCOUNTS for all."""
        tag = next((v for k, v in account.tags.items() if k.lower() == KEYLESS_ENFORCE_TAG), None)
        if tag is not None:
            return tag.strip().lower() == "true"
        return self.settings.enforce_keyless_accounts

    def enforce_keyless_account(self, account_id: ResourceId, blockers: Callable[[], Sequence[str]]) -> StepOutcome:
        """Turn keys off on an opted-in account once nothing that uses it still needs them.

        `blockers()` names what would break (bindings not verified, pods with a key); it is asked
        only for an opted-in account whose keys are on. While any remains, the outcome is
        `not-yet` with that list. Never turns keys back on."""
        step = "keyless-account"
        account = self.accounts.get(account_id)
        if not self.keyless_opt_in(account):
            return StepOutcome(step, "skipped", "not opted in (tag keyless-enforce=true)")
        if not account.disable_local_auth:
            account = self.accounts.get(account_id, fresh=True)  # the cached read may predate our PATCH
        if account.disable_local_auth:
            return StepOutcome(step, "unchanged", "local authentication is already disabled")
        would_break = list(blockers())
        if would_break:
            return StepOutcome(step, "not-yet", "keys stay on: these would break", details={"wouldBreak": would_break})
        if self.account_auth is None:
            return StepOutcome(step, "failed", "no account adapter configured")
        self.account_auth.disable_local_auth(account_id)
        return StepOutcome(step, "updated", "disabled local (key) authentication on the account")
