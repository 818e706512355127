"""Onboarding: one binding converged to present, step by step (validate before the first write).

    cluster → account → namespace → identity → federated-credential → role-assignment
            → service-account → configmap → deployment/<name>... (shared.engine.workload_steps)

Each step reads, asks shared.domain.planner, writes only the difference (nothing with `dry_run`),
and records its outcome. Ownership is the planner's: an identity is used only when its
`keyless-workload` tag names this workload; an annotation another field manager set to another
value is never overwritten unless the object is handed over (`keyless.io/adopt`).
"""

from __future__ import annotations

from shared.domain import naming, planner, retry_policy
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.observed import AccountState, ClusterState, IdentityState
from shared.engine.steps import PAST, Run, Stop
from shared.engine.workload_steps import WorkloadSteps
from shared.engine.world import World


class Onboarding:
    def __init__(self, world: World) -> None:
        self.w = world
        self.workloads = WorkloadSteps(world)

    def run(self, run: Run) -> None:
        b = run.binding
        cluster = run.run("cluster", lambda: self._cluster(run))
        account = run.run("account", lambda: self._account(run))
        run.run("namespace", lambda: self._namespace(run))
        identity = run.run("identity", lambda: self._identity(run, cluster))
        issuer = cluster.issuer_url or ""
        run.run("federated-credential", lambda: self._credential(run, identity, issuer))
        run.run("role-assignment", lambda: self._role(run, identity))
        run.run("service-account", lambda: self._service_account(run, identity))
        data = run.run("configmap", lambda: self._configmap(run, account, identity))
        run.result.kube_objects = [
            f"{b.namespace}/serviceaccounts/{b.service_account}",
            f"{b.namespace}/configmaps/{b.configmap_name}",
        ]
        self.workloads.enforce(run, data, identity)

    def _cluster(self, run: Run) -> ClusterState:
        b, w = run.binding, self.w
        cluster = w.clusters.get(b.cluster)
        run.cluster = cluster
        if planner.cluster_action(cluster, w.settings.enable_cluster_features) == "ready":
            if w.reach.known_unreachable(cluster):
                run.connection = w.reach.connect(b, cluster)
            run.record("cluster", "unchanged", issuer=cluster.issuer_url)
            return cluster
        if run.dry_run:
            run.record("cluster", "updated", "would enable OIDC issuer and workload identity (cluster update)")
            raise Stop
        updated = w.clusters.enable_workload_identity(b.cluster, w.settings.cluster_update_wait_seconds)
        if updated is None:
            raise TemporaryError(
                "enabling OIDC issuer and workload identity; the cluster update is running",
                retry_policy.CLUSTER_UPDATE_RUNNING_SECONDS,
            )
        if planner.cluster_action(updated, enable_allowed=False) != "ready":
            raise TemporaryError(
                "cluster updated but the OIDC issuer is not published yet", retry_policy.ISSUER_NOT_PUBLISHED_SECONDS
            )
        w.kube.forget(b.cluster)  # enabling OIDC restarts the API server
        run.record("cluster", "updated", "enabled OIDC issuer and workload identity", issuer=updated.issuer_url)
        return updated

    def _account(self, run: Run) -> AccountState:
        account = self.w.accounts.get(run.binding.account)
        planner.check_account(account)
        run.record("account", "unchanged", endpoint=account.endpoint, deployments=list(account.deployments))
        return account

    def _namespace(self, run: Run) -> None:
        b = run.binding
        if run.connection.call(lambda kube: kube.namespace_exists(b.cluster, b.namespace), run.cluster):
            run.record("namespace", "unchanged")
            return
        if not self.w.settings.create_namespaces:
            raise PermanentError(
                f"namespace {b.namespace!r} does not exist on the cluster; create it, "
                "or set KEYLESS_CREATE_NAMESPACES=true"
            )
        if not run.dry_run:
            run.kube.create_namespace(b.cluster, b.namespace)
        run.record("namespace", "created")

    def _identity(self, run: Run, cluster: ClusterState) -> IdentityState:
        b, w = run.binding, self.w
        sub, rg = w.identity_location(b)
        observed = w.find_identity(b)
        desired_tags = planner.identity_tags(b)
        action = planner.identity_action(observed, desired_tags)
        if observed is None:  # a new workload: room for its role? (asked before anything is written)
            self._check_role_room(run)
        identity = observed
        name = observed.name if observed else b.identity_name
        location = observed.location if observed else cluster.location
        if run.dry_run and (action != "unchanged" or identity is None):
            identity = planner.planned_identity(observed, sub, rg, name, location)
        elif action != "unchanged" or identity is None:
            tags = planner.merged_tags(observed, desired_tags)
            identity = w.identities.create_or_update(sub, rg, name, location, tags)
        run.result.identity = {
            "resourceId": identity.id,
            "clientId": identity.client_id,
            "principalId": identity.principal_id,
            "tenantId": identity.tenant_id,
        }
        run.record("identity", PAST[action], name=identity.name)
        return identity

    def _credential(self, run: Run, identity: IdentityState, issuer: str) -> None:
        b, w = run.binding, self.w
        sub, rg = w.identity_location(b)
        existing = [] if planner.is_planned(identity) else w.identities.list_credentials(sub, rg, identity.name)
        action, name = planner.credential_action(existing, b.credential_name, issuer, b.subject, identity.name, rg)
        if action in ("create", "update") and not run.dry_run:
            try:
                w.identities.put_credential(sub, rg, identity.name, name, issuer, b.subject)
            except PermanentError:
                # A racing writer may have created the same issuer+subject under another name
                # (Azure answers 400): look again before failing.
                again = w.identities.list_credentials(sub, rg, identity.name)
                action, name = planner.credential_action(again, b.credential_name, issuer, b.subject)
                if action != "adopt":
                    raise
        run.result.credential = {"name": name, "issuer": issuer, "subject": b.subject}
        run.record(
            "federated-credential",
            "unchanged" if action == "adopt" else PAST[action],
            "adopted an existing credential with the same issuer and subject" if action == "adopt" else "",
            name=name,
        )

    def _role(self, run: Run, identity: IdentityState) -> None:
        b, w = run.binding, self.w
        scope = str(b.account)
        sub = b.account.subscription_id
        existing = [] if planner.is_planned(identity) else w.roles.list_for_principal(sub, scope, identity.principal_id)
        action, found = planner.role_assignment_action(existing, scope, b.role_definition_id, identity.principal_id)
        if action == "unchanged" and found is not None:
            run.result.role_assignment_id = found.id
            run.record("role-assignment", "unchanged", name=found.name)
            return
        self._check_role_room(run)  # every new role assignment, also of a workload whose identity exists
        name = naming.role_assignment_name(scope, b.role_definition_id, identity.principal_id)
        if run.dry_run:
            run.record("role-assignment", "created", "would assign the role at the account scope")
            return
        created = w.roles.create(sub, scope, name, b.role_definition_id, identity.principal_id)
        if created is None:  # RoleAssignmentExists: present under another name
            run.record("role-assignment", "unchanged", "an equal role assignment exists under another name")
            return
        run.result.role_assignment_id = created.id
        run.record("role-assignment", "created", name=created.name)

    def _check_role_room(self, run: Run) -> None:
        """KEYLESS_ROLE_ASSIGNMENT_HEADROOM, before a role assignment is to be made (once per run): a
        new workload, another account for a workload that has its identity, a deleted one put back.
        A converged binding never counts."""
        headroom = self.w.settings.role_assignment_headroom
        if headroom <= 0 or run.role_room_checked:
            return
        sub = run.binding.account.subscription_id
        planner.check_role_assignment_room(self.w.roles.count_in_subscription(sub), sub, headroom)
        run.role_room_checked = True

    def _service_account(self, run: Run, identity: IdentityState) -> None:
        b = run.binding
        observed = run.kube.get_service_account(b.cluster, b.namespace, b.service_account)
        plan = planner.service_account_plan(observed, identity, self.w.settings.field_manager)
        if plan.action != "unchanged" and not run.dry_run:
            run.kube.apply_service_account(
                b.cluster, b.namespace, b.service_account, plan.annotations, plan.force, plan.labels
            )
        run.record("service-account", PAST[plan.action])

    def _configmap(self, run: Run, account: AccountState, identity: IdentityState) -> dict[str, str]:
        b = run.binding
        desired = planner.configmap_data(account, identity)
        observed = run.kube.get_configmap(b.cluster, b.namespace, b.configmap_name)
        plan = planner.configmap_plan(observed, desired, b, self.w.settings.field_manager)
        if plan.action != "unchanged" and not run.dry_run:
            run.kube.apply_configmap(
                b.cluster, b.namespace, b.configmap_name, desired, plan.labels, plan.annotations, plan.force
            )
        run.record("configmap", PAST[plan.action], name=b.configmap_name)
        return desired
