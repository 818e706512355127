"""Who is asking, and may they: the pieces every authenticated route shares."""

from __future__ import annotations

import logging
import re
from typing import Any

import azure.functions as func

from handlers._http import ApiError, field_error
from shared import runtime
from shared.binding import Binding
from shared.errors import KeylessError, PermanentError
from shared.policy import Denied, check_subscriptions
from shared.principal import HEADER, Caller, PrincipalError, dev_caller, parse_principal

log = logging.getLogger("keyless.api")

_KEY = re.compile(r"^[0-9a-f]{32}$")


def signed_in_caller(req: func.HttpRequest) -> Caller:
    """The signed-in caller (App Service Authentication), or the local development principal."""
    header = req.headers.get(HEADER)
    try:
        if header is None:
            dev = runtime.service().settings.dev_principal
            if dev:
                return dev_caller(dev)
        return parse_principal(header)
    except PrincipalError as exc:
        raise ApiError(401, "Unauthenticated", exc.reason, HEADER) from None


def authorize(caller: Caller, binding: Binding, action: str) -> str:
    """The rule allowing `action` on `binding`; 403 naming the missing grant (logged for audit)."""
    try:
        check_subscriptions(binding, runtime.service().settings.allowed_subscriptions)
        return str(runtime.policy().authorize(caller, binding))
    except Denied as exc:
        log.warning("denied %s for caller %s: %s", action, caller.object_id, exc.reason)
        raise field_error(exc.reason, 403, "Forbidden") from None


def record_binding(record: Any) -> Binding | None:
    try:
        return record.binding(runtime.service().settings.role_allowlist) if record.account else None
    except PermanentError:
        return None


def covers(caller: Caller, record: Any) -> bool:
    binding = record_binding(record)
    return binding is not None and runtime.policy().covers(caller, binding)


def authorize_record(caller: Caller, record: Any, action: str) -> None:
    binding = record_binding(record)
    if binding is None:
        log.warning("denied %s of %s for caller %s: no checkable binding", action, record.key, caller.object_id)
        raise ApiError(403, "Forbidden", "this onboarding has no binding your policy could cover", "id")
    authorize(caller, binding, action)


def onboarding_key(req: func.HttpRequest) -> str:
    key = (req.route_params.get("id") or "").strip().lower()
    if not _KEY.match(key):
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
