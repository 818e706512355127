"""Cluster-tag derivation: which bindings a cluster's tags ask for, brought into the ledger.

A cluster write (or delete) event queues a re-read of the cluster; this use case reads the tags
(shared.domain.cluster_tags), records one binding per asked pair and queues it, and offboards the
pairs the tags no longer name. Whether a tag binding may exist is not decided here: the worker's
door (shared.app.admission) asks the account side's consent before every run. An account event
re-reads the bindings that use it and the tagged clusters of its resource group that would pick it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.app import quotas
from shared.domain import cluster_tags, naming
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, NotFoundError, PermanentError, TemporaryError
from shared.domain.ids import CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.domain.records import SOURCE_API, SOURCE_TAGS, BindingRecord, utcnow

if TYPE_CHECKING:
    from shared.app.keyless import Keyless

log = logging.getLogger("keyless.service")


def sync_cluster(app: Keyless, cluster_id: ResourceId, deleted: bool = False) -> list[str]:
    """Bring the ledger in line with the cluster's tags, or its deletion; queue the changes.

    `deleted` is what the event said; ARM is asked either way and has the last word."""
    existing = list(app.ledger.all(cluster=str(cluster_id)))
    try:
        cluster = app.engine.clusters.get(cluster_id, fresh=True)
    except NotFoundError:
        return [offboard_record(app, r, "cluster deleted", "") for r in existing if r.live]
    except PermanentError as exc:  # e.g. 403: not a deletion; nothing to do until someone fixes it
        log.error("cluster %s: cannot read it: %s", cluster_id, exc.reason)
        return []
    if deleted:
        log.info("cluster %s: a delete event, but ARM has the cluster (re-created?): syncing it", cluster_id)
    version = {"clusterVersion": app.engine.clusters.version(cluster)}
    tag_rules = cluster_tags.read_tags(cluster, cluster_id, app.settings.system_namespaces)
    for error in tag_rules.errors:
        log.warning("cluster %s: %s", cluster_id, error)
    wanted = _bindings_from_tags(app, cluster_id, tag_rules)
    touched: list[str] = []
    wanted_keys = set()
    for item in wanted:
        if isinstance(item, BindingRecord):  # an unresolvable account, recorded as failed
            wanted_keys.add(item.key)
            if not app.ledger.create(item):
                current = app.ledger.get(item.key)
                if current is not None and (current.reason != item.reason or current.status != "failed"):
                    item.etag = current.etag
                    app.ledger.save(item)
            continue
        wanted_keys.add(item.key)
        record = BindingRecord.for_binding(item, requested_by=f"tags:{cluster_id.name}", source=SOURCE_TAGS)
        if not app.ledger.create(record):
            current = app.ledger.get(record.key)
            revive = current is not None and not current.live
            # the tag's Deployments are the tag binding's desired state; an API binding keeps its own
            retarget = current is not None and current.source == SOURCE_TAGS and current.workloads != record.workloads
            if current is not None and (revive or retarget):
                if revive:  # whoever deleted it, its tags ask for it now: their request, counted anew
                    quotas.renew(app, current, record.requested_by, SOURCE_TAGS, {})
                current.workloads = list(record.workloads)
                app.ledger.save(current)
        app.enqueue_binding(record.key, "cluster written", 0, version)
        touched.append(record.key)
    for record in existing:
        if record.key in wanted_keys or not record.live:
            continue
        if record.source == SOURCE_TAGS:
            touched.append(offboard_record(app, record, "removed from the cluster's tags"))
        elif record.source == SOURCE_API:
            app.enqueue_binding(record.key, "cluster written", 0, version)
            touched.append(record.key)
    return touched


def _bindings_from_tags(app: Keyless, cluster_id: ResourceId, tag_rules: cluster_tags.TagRules) -> list[Any]:
    if not tag_rules.workloads:
        return []
    account_id: str | None = str(tag_rules.account) if tag_rules.account else None
    problem = ""
    if account_id is None:
        try:
            candidates = app.engine.accounts.list_in_group(cluster_id.subscription_id, cluster_id.resource_group)
            account_id = cluster_tags.choose_account(candidates)
        except KeylessError as exc:
            if isinstance(exc, TemporaryError):
                raise
            problem = exc.reason
    out: list[Any] = []
    for ns, sa in tag_rules.workloads:
        if account_id is not None:
            out.append(
                Binding.create(
                    str(cluster_id),
                    ns,
                    sa,
                    account_id,
                    app.settings.default_role,
                    allowlist=app.settings.role_allowlist,
                    workloads=list(tag_rules.deployments_of(ns, sa)),
                )
            )
            continue
        key = naming.short_hash(cluster_id.key, ns, sa, "unresolved-account", length=32)
        out.append(
            BindingRecord(
                key=key,
                cluster=str(cluster_id),
                namespace=ns,
                service_account=sa,
                account="",
                role_definition_id=app.settings.default_role,
                status="failed",
                reason=problem,
                last_error=problem,
                requested_by=f"tags:{cluster_id.name}",
                source=SOURCE_TAGS,
            )
        )
    return out


def sync_account(app: Keyless, account_id: ResourceId, deleted: bool = False) -> list[str]:
    """Re-reconcile (or, when ARM no longer has it, offboard) every binding that uses the
    account, and re-read tagged clusters in its resource group that would pick it.

    `deleted` is what the event said; ARM is asked either way and has the last word."""
    try:
        account = app.engine.accounts.get(account_id, fresh=True)
        version = {"accountVersion": app.engine.accounts.version(account)}
        deleted = False
    except NotFoundError:
        deleted, version = True, {"accountVersion": ""}
    except PermanentError as exc:
        log.error("account %s: cannot read it: %s", account_id, exc.reason)
        return []
    touched: list[str] = []
    for record in app.ledger.all(account=str(account_id), live_only=True):
        if deleted:
            touched.append(offboard_record(app, record, "account deleted", ""))
        else:
            app.enqueue_binding(record.key, "account written", 0, version)
            touched.append(record.key)
    if not deleted:
        for cluster in app.engine.clusters.list_in_group(account_id.subscription_id, account_id.resource_group):
            cluster_id = parse_resource_id(cluster.id, CLUSTER_TYPE, "id")
            tag_rules = cluster_tags.read_tags(cluster, cluster_id, app.settings.system_namespaces)
            if tag_rules.workloads and tag_rules.account is None:
                app.queue_resync("cluster", cluster_id, "write")
    return touched


def offboard_record(app: Keyless, record: BindingRecord, reason: str, cluster_version: str | None = None) -> str:
    """Desired = absent, and queue the offboarding. `cluster_version` "" when the cluster is gone."""
    record.desired = "absent"
    record.status = "offboarding"
    record.reason = reason
    record.updated_at = utcnow()
    if record.account and record.ever_granted:
        app.ledger.save(record)
        versions = {"clusterVersion": cluster_version} if cluster_version is not None else None
        app.enqueue_binding(record.key, reason, 0, versions)
    else:  # nothing was made for it (no account, or refused before any run)
        record.status = "removed"
        quotas.give_back(app, record)
        app.ledger.save(record)
    return record.key
