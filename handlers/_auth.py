"""Who is asking, and may they: the pieces every authenticated route shares."""

from __future__ import annotations

import logging
import re
from typing import Any

import azure.functions as func

from handlers._http import ApiError, field_error
from shared.app import composition
from shared.domain import access
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, PermanentError
from shared.domain.principal import HEADER, Caller, PrincipalError, dev_caller, parse_principal

log = logging.getLogger("keyless.api")

_KEY = re.compile(r"^[0-9a-f]{32}$")


def signed_in_caller(req: func.HttpRequest) -> Caller:
    """The signed-in caller (App Service Authentication), or the local development principal.

    The principal header is trusted because App Service Authentication strips a client's own and
    sets it; without that module in front (WEBSITE_AUTH_ENABLED) anyone could send one, so inside
    Azure every call is refused until it is on."""
    settings = composition.service().settings
    if settings.in_azure and not settings.app_service_auth:
        log.error("refused an API call: App Service Authentication is off (WEBSITE_AUTH_ENABLED), so %s "
                  "cannot be trusted", HEADER)  # fmt: skip
        raise ApiError(
            503,
            "AuthenticationNotConfigured",
            "App Service Authentication (Entra ID) is not enabled on this app; until it is, no call is trusted",
        )
    header = req.headers.get(HEADER)
    try:
        if header is None:
            dev = settings.dev_principal
            if dev:
                return dev_caller(dev)
        return parse_principal(header)
    except PrincipalError as exc:
        raise ApiError(401, "Unauthenticated", exc.reason, HEADER) from None


def authorize(caller: Caller, binding: Binding, action: str) -> access.Grant:
    """The grant allowing `action` on `binding` (shared.domain.access, the one door the worker asks too);
    403 naming the missing grant (logged for audit)."""
    try:
        return composition.service().grant_for(binding, caller)  # type: ignore[no-any-return]
    except access.Refused as exc:
        raise denied(caller, action, exc) from None


def denied(caller: Caller, action: str, exc: access.Refused) -> ApiError:
    """A refusal as a 403 (QuotaExceeded for a used-up quota), logged with the caller for audit."""
    log.warning("denied %s for caller %s: %s", action, caller.object_id, exc.reason)
    return field_error(exc.reason, 403, "QuotaExceeded" if isinstance(exc, access.QuotaExceeded) else "Forbidden")


def record_binding(record: Any) -> Binding | None:
    try:
        return record.binding(composition.service().settings.role_allowlist) if record.account else None
    except PermanentError:
        return None


def covers(caller: Caller, record: Any) -> bool:
    if caller.object_id and record.requested_by_object_id() == caller.object_id:
        return True
    binding = record_binding(record)
    return binding is not None and composition.policy().covers(caller, binding)


def authorize_record(caller: Caller, record: Any, action: str) -> None:
    """The caller's policy covers the record's binding, or the caller asked for it: whoever asked may
    always read and take away their own binding, even after the policy stopped granting it."""
    if caller.object_id and record.requested_by_object_id() == caller.object_id:
        return
    binding = record_binding(record)
    if binding is None:
        log.warning("denied %s of %s for caller %s: no checkable binding", action, record.key, caller.object_id)
        raise ApiError(403, "Forbidden", "this onboarding has no binding your policy could cover", "id")
    authorize(caller, binding, action)


def onboarding_key(req: func.HttpRequest) -> str:
    key = (req.route_params.get("id") or "").strip().lower()
    if not _KEY.fullmatch(key):
        raise ApiError(400, "InvalidField", "an onboarding id is 32 lower-case hex characters", "id")
    return key


def handle_errors(fn: Any, req: func.HttpRequest) -> func.HttpResponse:
    try:
        return fn(req)
    except ApiError as exc:
        return exc.response()
    except KeylessError as exc:
        log.warning("request failed: %s", exc.reason)
        return ApiError(503, "Unavailable", exc.reason).response()
