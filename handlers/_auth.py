"""Who is asking, and may they: the pieces every authenticated route shares."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

import azure.functions as func

from handlers._http import ApiError, cross_site, field_error
from shared.app import composition, observability, self_service
from shared.domain import access
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, Throttled
from shared.domain.principal import HEADER, Caller, PrincipalError, dev_caller, parse_principal
from shared.domain.records import BindingRecord

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


def signed_in_with(req: func.HttpRequest) -> str:
    """How signed_in_caller found the caller: `entra` (App Service Authentication's header), or
    `dev-principal` (KEYLESS_DEV_PRINCIPAL, local only)."""
    return "entra" if req.headers.get(HEADER) is not None else "dev-principal"


def authorize(caller: Caller, binding: Binding, action: str) -> access.Grant:
    """The grant allowing `action` on `binding` (shared.domain.access, the one door the worker asks too);
    403 naming the missing grant (logged for audit)."""
    try:
        return composition.service().grant_for(binding, caller)
    except access.Refused as exc:
        raise denied(caller, action, exc) from None


def denied(caller: Caller, action: str, exc: access.Refused) -> ApiError:
    """A refusal as a 403 (QuotaExceeded for a used-up quota), logged with the caller for audit."""
    log.warning("denied %s for caller %s: %s", action, caller.object_id, exc.reason)
    return field_error(exc.reason, 403, "QuotaExceeded" if isinstance(exc, access.QuotaExceeded) else "Forbidden")


def not_found() -> ApiError:
    return ApiError(404, "NotFound", "no onboarding with this id", "id")


def record_for(caller: Caller, key: str, action: str) -> BindingRecord:
    """The onboarding `key`, when the caller may `read` it (they asked for it, or their policy covers it: what
    the list shows them, shared.app.self_service.may_see) or take it away (they asked for it, or hold its
    grant: shared.app.self_service.check_may_act). A teammate reads why a binding was revoked; only the
    grant's holder or its requester takes it away.

    404 when there is none, and the very same 404 when the caller may not even see it: an id (a hash
    of the binding's names) must not tell a stranger that another team's binding exists. 403 only for
    one the caller may see but not act on. Every refusal is logged with the caller for audit."""
    svc = composition.service()
    record = self_service.onboarding(svc, key)
    if record is None:
        raise not_found()
    if action == "read":
        if not self_service.may_see(svc, caller, record):
            log.warning("denied read of %s for caller %s: not theirs, and no rule covers it", record.key,
                        caller.object_id)  # fmt: skip
            raise not_found()
        return record
    try:
        self_service.check_may_act(svc, caller, record)
    except access.Refused as exc:
        error = denied(caller, f"{action} of {record.key}", exc)
        raise (error if self_service.may_see(svc, caller, record) else not_found()) from None
    return record


def onboarding_key(req: func.HttpRequest) -> str:
    key = (req.route_params.get("id") or "").strip().lower()
    if not _KEY.fullmatch(key):
        raise ApiError(400, "InvalidField", "an onboarding id is 32 lower-case hex characters", "id")
    observability.annotate(**{"keyless.onboarding.id": key})
    return key


def handle_errors(
    fn: Callable[[func.HttpRequest], func.HttpResponse], req: func.HttpRequest, route: str
) -> func.HttpResponse:
    """The call as one span (`<METHOD> <route>`, its status code), its errors as JSON answers."""
    with observability.http_request(req.method or "", route) as span:
        try:
            forged = cross_site(req, route)
            if forged is not None:
                log.warning("refused %s %s: %s", req.method, route, forged.message)
                raise forged
            resp = fn(req)
        except ApiError as exc:
            resp = exc.response()
        except Throttled as exc:  # Azure's limits, or the caller's share of them: come back later
            log.info("request throttled: %s", exc.reason)
            resp = field_error(exc.reason, 429, "TooManyRequests").response()
            resp.headers["Retry-After"] = str(max(1, math.ceil(exc.delay_seconds)))
        except KeylessError as exc:
            log.warning("request failed: %s", exc.reason)
            resp = ApiError(503, "Unavailable", exc.reason).response()
        except Exception as exc:
            storage = composition.storage_failure(exc)
            if storage is None:
                raise  # a bug: the host answers 500 and logs it with its stack
            log.warning("request failed: %s", storage.reason)
            resp = ApiError(503, "StorageUnavailable", storage.reason).response()
        span.set("http.response.status_code", resp.status_code)
        if resp.status_code >= 500:
            span.fail(str(resp.status_code))
        return resp
