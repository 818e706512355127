"""The self-service HTTP API: /api/onboardings, /api/openapi.json, /api/health.

One way to sign in: every route is anonymous at the Functions level, and App Service Authentication
(Entra ID) is the door in Azure. A function key on top would be a second credential per call (App Service
Authentication does not waive function keys), shared by every team. Without App Service Authentication in
front, nothing vouches for X-MS-CLIENT-PRINCIPAL: inside Azure every call is then refused
(handlers._auth.signed_in_caller); locally the dev principal stands in."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import azure.functions as func

from handlers._auth import (
    authorize,
    denied,
    handle_errors,
    not_found,
    onboarding_key,
    record_for,
    signed_in_caller,
    signed_in_with,
)
from handlers._http import MAX_PAGE_SIZE, ApiError, field_error, flag, json_body, json_response
from handlers.openapi import document as openapi_document
from shared.app import composition, self_service, sweep, whoami
from shared.domain import access
from shared.domain.binding import Binding
from shared.domain.errors import PermanentError
from shared.domain.records import RECORD_STATUSES

bp = func.Blueprint()
log = logging.getLogger("keyless.api")

ALLOWED_FIELDS = {"cluster", "namespace", "serviceAccount", "openAIAccount", "role", "workloads"}


def _binding_from(body: dict[str, Any], allowlist: tuple[str, ...], default_role: str) -> Binding:
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        raise ApiError(400, "UnknownField", f"unknown field; allowed: {sorted(ALLOWED_FIELDS)}", unknown[0])
    if body.get("role") is not None and not isinstance(body.get("role"), str):
        raise ApiError(400, "InvalidField", "must be a role definition id or name", "role")  # [] is no default
    if body.get("openAIAccount") in (None, ""):
        raise ApiError(400, "InvalidField", "required: the Azure OpenAI account resource id", "openAIAccount")
    try:
        return Binding.create(
            body.get("cluster"),  # type: ignore[arg-type]
            body.get("namespace"),  # type: ignore[arg-type]
            body.get("serviceAccount"),  # type: ignore[arg-type]
            body.get("openAIAccount"),  # type: ignore[arg-type]
            body.get("role") or default_role,
            allowlist=allowlist,
            workloads=body.get("workloads"),
        )
    except PermanentError as exc:
        raise field_error(exc.reason) from None


@bp.function_name("onboardings_create")
@bp.route(route="onboardings", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def onboardings_create(req: func.HttpRequest) -> func.HttpResponse:
    def handle(req: func.HttpRequest) -> func.HttpResponse:
        caller = signed_in_caller(req)
        dry_run = flag(req, "dryRun")
        body = json_body(req)
        svc = composition.service()
        binding = _binding_from(body, svc.settings.role_allowlist, svc.settings.default_role)
        grant = authorize(caller, binding, "onboarding")
        log.info("caller %s allowed by %s to onboard %s", caller.object_id, grant.by, binding.key)
        if dry_run:
            plan = self_service.plan(svc, binding, caller)
            return json_response(
                {"id": binding.key, "binding": binding.describe(), "grantedBy": grant.by, "plan": plan.as_dict()}
            )
        try:
            record, created = self_service.request_onboarding(svc, binding, caller, grant)
        except access.Refused as exc:
            raise denied(caller, "onboarding", exc) from None
        location = f"/api/onboardings/{record.key}"
        return json_response(record.as_api(), 202 if created else 200, {"Location": location})

    return handle_errors(handle, req, "/api/onboardings")


@bp.function_name("onboardings_list")
@bp.route(route="onboardings", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def onboardings_list(req: func.HttpRequest) -> func.HttpResponse:
    def handle(req: func.HttpRequest) -> func.HttpResponse:
        caller = signed_in_caller(req)
        try:
            page_size = int(req.params.get("pageSize") or 50)
        except ValueError:
            raise ApiError(400, "InvalidParameter", "pageSize must be a whole number", "pageSize") from None
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ApiError(400, "InvalidParameter", f"pageSize must be 1 to {MAX_PAGE_SIZE}", "pageSize")
        cluster = req.params.get("cluster") or None
        namespace = req.params.get("namespace") or None
        if cluster is not None and len(cluster) > 1024:
            raise ApiError(400, "InvalidParameter", "cluster is too long", "cluster")
        if namespace is not None and len(namespace) > 63:
            raise ApiError(400, "InvalidParameter", "namespace is too long", "namespace")
        account = req.params.get("account") or None
        if account is not None and len(account) > 1024:
            raise ApiError(400, "InvalidParameter", "account is too long", "account")
        statuses = _statuses(req.params.get("status") or "")
        try:
            records, token = self_service.onboardings(
                composition.service(),
                caller,
                cluster,
                namespace,
                page_size,
                req.params.get("continuationToken") or None,
                account=account,
                statuses=statuses,
            )
        except ValueError as exc:
            raise ApiError(400, "InvalidParameter", str(exc), "continuationToken") from None
        body: dict[str, Any] = {"value": [r.as_api() for r in records]}
        if token:
            body["continuationToken"] = token
        return json_response(body)

    return handle_errors(handle, req, "/api/onboardings")


def _statuses(value: str) -> frozenset[str]:
    """`status=failed,not-ready`: each one a record status (400 naming `status` otherwise)."""
    wanted = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(wanted - set(RECORD_STATUSES))
    if unknown:
        raise ApiError(
            400, "InvalidParameter", f"status {unknown[0][:40]!r} is none of {list(RECORD_STATUSES)}", "status"
        )
    return wanted


@bp.function_name("onboardings_get")
@bp.route(route="onboardings/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def onboardings_get(req: func.HttpRequest) -> func.HttpResponse:
    def handle(req: func.HttpRequest) -> func.HttpResponse:
        record = record_for(signed_in_caller(req), onboarding_key(req), "read")
        return json_response(record.as_api())

    return handle_errors(handle, req, "/api/onboardings/{id}")


@bp.function_name("onboardings_delete")
@bp.route(route="onboardings/{id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
def onboardings_delete(req: func.HttpRequest) -> func.HttpResponse:
    def handle(req: func.HttpRequest) -> func.HttpResponse:
        caller = signed_in_caller(req)
        key = onboarding_key(req)
        record_for(caller, key, "offboarding")
        record = self_service.request_offboarding(composition.service(), key)
        if record is None:
            raise not_found()
        log.info("caller %s asked to offboard %s", caller.object_id, key)
        return json_response(record.as_api(), 202, {"Location": f"/api/onboardings/{record.key}"})

    return handle_errors(handle, req, "/api/onboardings/{id}")


@bp.function_name("sweeps_latest")
@bp.route(route="sweeps/latest", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def sweeps_latest(req: func.HttpRequest) -> func.HttpResponse:
    """Any signed-in caller: the answer is counts and a random id, never a binding, cluster or team."""

    def handle(req: func.HttpRequest) -> func.HttpResponse:
        signed_in_caller(req)
        progress = sweep.latest(composition.service())
        if progress is None:
            raise ApiError(404, "NotFound", "no drift sweep has run yet")
        return json_response(
            {
                "id": progress.id,
                "number": progress.number,
                "startedAt": _iso(progress.started_at),
                "finishedAt": _iso(progress.finished_at) if progress.finished_at is not None else None,
                "durationSeconds": progress.duration_seconds,
                "planned": progress.planned,
                "shards": progress.shards,
                "shardsDone": progress.shards_done,
                "suspects": progress.suspects,
                "queued": progress.queued,
                "repaired": progress.repaired,
                "source": progress.source,
                "resumes": progress.resumes,
            }
        )

    return handle_errors(handle, req, "/api/sweeps/latest")


@bp.function_name("me")
@bp.route(route="me", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def me(req: func.HttpRequest) -> func.HttpResponse:
    """The caller and what they may ask for: the access-policy rules that name them (only theirs)."""

    def handle(req: func.HttpRequest) -> func.HttpResponse:
        caller = signed_in_caller(req)
        mine = whoami.whoami(composition.service(), caller, signed_in_with(req))
        return json_response(
            {
                "objectId": caller.object_id,
                "name": caller.name,
                "signedInWith": mine.signed_in_with,
                "rules": [
                    {
                        "name": r.rule.name,
                        "matchedBy": list(r.matched_by),
                        "clusters": list(r.rule.clusters),
                        "namespaces": list(r.rule.namespaces),
                        "serviceAccounts": list(r.rule.service_accounts),
                        "accounts": list(r.rule.accounts),
                        "roles": list(r.roles),
                        "workloads": list(r.rule.workloads),
                        "maxBindings": r.max_bindings,
                        "liveBindings": r.live_bindings,
                    }
                    for r in mine.rules
                ],
                "allowedSubscriptions": list(mine.allowed_subscriptions),
                "defaultRole": mine.default_role,
                "hint": mine.hint,
            }
        )

    return handle_errors(handle, req, "/api/me")


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(openapi_document())


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Each check (shared.app.contracts.Health) with what is wrong and its fix. Anyone may ask: the
    messages name settings, never their values."""
    try:
        checks = [("settings", None), *self_service.health(composition.service())]
    except PermanentError as exc:  # SettingsError: nothing else can be checked
        checks = [
            ("settings", exc.reason),
            *((name, "") for name in ("storage-table", "storage-queue", "azure-credential")),
        ]
    except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
        checks = [("settings", f"the app could not start ({type(exc).__name__})")]
        checks += [(name, "") for name in ("storage-table", "storage-queue", "azure-credential")]
    failing = [(name, problem) for name, problem in checks if problem]
    for name, problem in failing:
        log.info("health: %s: %s", name, problem)  # probes come often; the causes log once themselves
    storage_ok = all(problem is None for name, problem in checks if name.startswith("storage"))
    body = {
        "status": "unhealthy" if failing else "healthy",
        "storage": "reachable" if storage_ok else "unreachable",
        "checks": [_check(name, problem) for name, problem in checks],
    }
    return json_response(body, 503 if failing else 200)


def _check(name: str, problem: str | None) -> dict[str, str]:
    """A problem of "" means not checked (the settings failed first)."""
    if problem is None:
        return {"name": name, "status": "pass"}
    if problem == "":
        return {"name": name, "status": "skipped"}
    return {"name": name, "status": "fail", "message": _QUOTED.sub("'…'", problem)}


_QUOTED = re.compile(r"'[^']*'")
"""A value a settings error quotes (`got 'x'`): /api/health answers anyone, so it shows the key, not the value."""
