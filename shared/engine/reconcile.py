"""The reconcile engine: one binding against the world, observed and converged.

Level-triggered and idempotent: every step reads what is there, asks the planner what to do, and
writes only the difference. Running it again after success writes nothing; running it again after a
crash at any point converges, because every name is deterministic. `Engine` is the front of five
jobs, each a module of its own:

    shared.engine.onboarding       the steps to present (cluster → ... → configmap)
    shared.engine.workload_steps   the binding's Deployments, one step each
    shared.engine.offboarding      to absent: Azure's access first, then the cluster, best effort
    shared.engine.verify           verification I/O (reads only)
    shared.engine.keyless_accounts switching keys off on opted-in accounts
    shared.engine.inventory        the drift sweep's bulk reads (Resource Graph, labelled lists)

over one step runner (shared.engine.steps) and one cluster-access seam
(shared.engine.cluster_access: the API server, or run command for a private cluster).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from shared.adapters import telemetry
from shared.adapters.account_auth import AccountAuthAdapter
from shared.adapters.accounts import AccountAdapter
from shared.adapters.arm import ArmClients
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.counting import counting
from shared.adapters.identities import IdentityAdapter
from shared.adapters.kube import KubeAdapter
from shared.adapters.resource_graph import ResourceGraphAdapter
from shared.adapters.roles import RoleAssignmentAdapter
from shared.adapters.runcommand import RunCommandAdapter
from shared.domain import planner, verification
from shared.domain.binding import Binding
from shared.domain.ids import ResourceId
from shared.domain.observed import AccountState
from shared.domain.results import ReconcileResult, StepOutcome
from shared.domain.revocation import Made
from shared.domain.settings import Settings
from shared.engine.inventory import Inventory
from shared.engine.keyless_accounts import KeylessAccounts
from shared.engine.offboarding import Offboarding
from shared.engine.onboarding import Onboarding
from shared.engine.steps import Run, StepHook, Stop, offboard_steps, onboard_steps
from shared.engine.verify import Verifier
from shared.engine.world import World


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
        graph: ResourceGraphAdapter | None = None,
    ) -> None:
        self.world = World(settings, clusters, accounts, identities, roles, kube, account_auth, run_command)
        self.inventory = Inventory(self.world, graph)  # the drift sweep's bulk reads
        self.settings, self.clusters, self.accounts = settings, clusters, accounts
        self.identities, self.roles, self.kube = identities, roles, kube
        self._onboarding = Onboarding(self.world)
        self._offboarding = Offboarding(self.world)
        self._accounts = KeylessAccounts(self.world)
        self._verifier = Verifier(self.world, self._accounts.opted_in)

    pacer: Any = None
    """The ARM pacer (shared.adapters.pacing) of an engine built from settings: what it waited is a metric."""

    @classmethod
    def from_settings(cls, settings: Settings, credential: Any) -> Engine:
        arm = ArmClients(credential, settings)
        clusters = ClusterAdapter(arm)
        engine = cls(
            settings,
            clusters,
            AccountAdapter(arm),
            IdentityAdapter(arm),
            RoleAssignmentAdapter(arm),
            KubeAdapter(credential, settings, clusters),
            AccountAuthAdapter(arm),
            RunCommandAdapter(arm, credential, settings),
            ResourceGraphAdapter(credential, settings),
        )
        engine.pacer = arm.pacer
        return engine

    def identity_location(self, binding: Binding) -> tuple[str, str]:
        """(subscription, resource group) of the binding's identity: settings, else the cluster's."""
        return self.world.identity_location(binding)

    def reconcile(
        self, binding: Binding, on_step: StepHook | None = None, dry_run: bool = False, counted_role: bool = False
    ) -> ReconcileResult:
        """Converge the binding to present. Never raises for Azure/Kubernetes conditions.

        With `dry_run`, only reads: each step reports what it would do (`created` = would create).
        `counted_role`: the binding held its role assignment before (a running binding's, deleted out of
        band): putting it back takes no new place, so KEYLESS_ROLE_ASSIGNMENT_HEADROOM is not asked."""
        result = ReconcileResult(binding_key=binding.key, desired="present", dry_run=dry_run)
        with _run_span("keyless.reconcile", binding, result, dry_run=dry_run):
            run = Run(binding, result, on_step, self.world.reach.connect(binding), dry_run)
            run.role_room_checked = counted_role
            with counting(result.requests):
                try:
                    self._onboarding.run(run)
                except Stop:
                    pass
                finally:
                    run.skip_rest(onboard_steps(binding))
        return result

    def offboard(
        self,
        binding: Binding,
        others: Sequence[Binding] = (),
        on_step: StepHook | None = None,
        made: Made | None = None,
    ) -> ReconcileResult:
        """Converge the binding to absent: Azure's access first, then the cluster, best effort
        (shared.engine.offboarding).

        `others` are the bindings still live; the identity, its credential, the service account
        annotations and a shared ConfigMap stay while another binding uses them. `made` is what the
        binding's record says Keyless made (shared.domain.revocation); without it, the tags decide."""
        result = ReconcileResult(binding_key=binding.key, desired="absent")
        with _run_span("keyless.offboard", binding, result):
            run = Run(binding, result, on_step, self.world.reach.connect(binding))
            shared_workload = planner.workload_still_bound(binding, list(others))
            shared_configmap = planner.configmap_still_used(binding, list(others))
            with counting(result.requests):
                try:
                    self._offboarding.run(run, shared_workload, shared_configmap, made)
                except Stop:
                    pass
                finally:
                    run.skip_rest(offboard_steps(binding))
        return result

    def verify(self, binding: Binding, after: ReconcileResult | None = None) -> verification.VerificationReport:
        """Check that the binding really works keyless, check by check (reads only)."""
        with telemetry.span("keyless.verify", _binding_attributes(binding)) as span:
            report = self._verifier.verify(binding, after)
            span.set("keyless.verification.status", report.status)
            return report

    def keyless_opt_in(self, account: AccountState) -> bool:
        return self._accounts.opted_in(account)

    def enforce_keyless_account(self, account_id: ResourceId, blockers: Callable[[], Sequence[str]]) -> StepOutcome:
        """Turn keys off on an opted-in account once nothing that uses it still needs them."""
        return self._accounts.enforce(account_id, blockers)


def _binding_attributes(binding: Binding) -> dict[str, str]:
    """A binding as span attributes: its id and the ids and names it is made of."""
    return {
        "keyless.onboarding.id": binding.key,
        "keyless.cluster.id": str(binding.cluster),
        "keyless.namespace": binding.namespace,
        "keyless.service_account": binding.service_account,
        "keyless.account.id": str(binding.account),
    }


@contextlib.contextmanager
def _run_span(name: str, binding: Binding, result: ReconcileResult, dry_run: bool = False) -> Iterator[None]:
    """One run of one binding as a span (its steps beneath), its status the outcome."""
    attributes: dict[str, str | bool] = {**_binding_attributes(binding), "keyless.dry_run": dry_run}
    with telemetry.span(name, attributes) as span:
        yield
        span.set("keyless.run.outcome", "throttled" if result.throttled else result.status)
