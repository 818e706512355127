"""Workload steps: the binding's Deployments, one step each (`deployment/<name>`).

For each Deployment the binding names, Keyless server-side-applies only its own fields of the pod
template and removes API-key variables by a guarded JSON patch (shared.domain.workloads decides);
a Deployment it enforced before and no longer names gets its fields back. Deployments are found by
the binding's label in one list call.
"""

from __future__ import annotations

import functools
from typing import Any

from shared.domain import workloads
from shared.domain.errors import TemporaryError
from shared.domain.observed import IdentityState
from shared.engine.steps import DEPLOYMENT_STEP, Run
from shared.engine.world import World

NOT_DEPLOYED_DELAY = 300.0
"""A named Deployment that is not there yet: look again in five minutes (a release may be on its way)."""


class WorkloadSteps:
    def __init__(self, world: World) -> None:
        self.w = world

    def claimed(self, run: Run) -> list[workloads.DeploymentState]:
        """Deployments this binding enforces (labelled with its key): one list call."""
        b = run.binding
        return run.kube.list_deployments(  # type: ignore[no-any-return]
            b.cluster,
            b.namespace,
            f"{workloads.BINDING_LABEL}={b.key[:63]}",
            forbidden_is_empty=not b.workloads,
        )

    def enforce(self, run: Run, data: dict[str, str], identity: IdentityState) -> None:
        """Each named Deployment patched; Deployments no longer named released."""
        b = run.binding
        first = DEPLOYMENT_STEP + (b.workloads[0] if b.workloads else "*")
        claimed = {d.name: d for d in run.run(first, lambda: self.claimed(run))}
        for name in b.workloads:
            step = functools.partial(self._deployment, run, name, claimed, data, identity)
            run.run(DEPLOYMENT_STEP + name, step)
        for name in sorted(set(claimed) - set(b.workloads)):
            release = functools.partial(self.release, run, DEPLOYMENT_STEP + name, claimed[name], "no longer named")
            run.run(DEPLOYMENT_STEP + name, release)
        run.result.kube_objects += [f"{b.namespace}/deployments/{n}" for n in b.workloads]

    def _deployment(
        self,
        run: Run,
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
            "manager": self.w.settings.field_manager,
            "rules": self.w.key_rules,
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
        done.json_patch, done.removed = workloads.removals(deploy, self.w.key_rules, b.configmap_name, data, targets)
        if done.json_patch:
            run.kube.json_patch_deployment(b.cluster, b.namespace, name, done.json_patch)
            if not plan.removed:
                done.reasons.append(
                    "removed " + ", ".join(f"{r['variable']} from {r['container']}" for r in done.removed)
                )
        run.record(step, "updated", "; ".join(done.reasons), **done.details())

    def release(self, run: Run, step: str, deploy: workloads.DeploymentState, why: str) -> None:
        """Give back Keyless's fields on one Deployment."""
        plan = workloads.plan_release(deploy, self.w.settings.field_manager)
        if plan.apply is None:
            run.record(step, "unchanged", why)
            return
        if not run.dry_run:
            run.kube.apply_deployment(run.binding.cluster, run.binding.namespace, plan.apply)
        run.record(step, "updated", f"{why}: " + "; ".join(plan.reasons), **plan.details())
