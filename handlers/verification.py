"""GET /api/onboardings/{id}/verification: is this binding really keyless, check by check?

Runs the checks live (reads only: ARM and the cluster) and answers the report: each check
`pass` / `fail` / `pending` with evidence, the overall status, and the account's keyless state
(whether keys still work, whether it opted in, what turning them off would break). The caller
must be allowed to read the onboarding (the same rule as GET /api/onboardings/{id}).
"""

from __future__ import annotations

import logging

import azure.functions as func

from handlers._auth import authorize_record, handle_errors, onboarding_key, signed_in_caller
from handlers._http import ApiError, json_response
from shared.app import composition

bp = func.Blueprint()
log = logging.getLogger("keyless.verification")


@bp.function_name("onboardings_verification")
@bp.route(route="onboardings/{id}/verification", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def onboardings_verification(req: func.HttpRequest) -> func.HttpResponse:
    def handle(req: func.HttpRequest) -> func.HttpResponse:
        caller = signed_in_caller(req)
        svc = composition.service()
        record = svc.onboarding(onboarding_key(req))
        if record is None:
            raise ApiError(404, "NotFound", "no onboarding with this id", "id")
        authorize_record(caller, record, "read")
        if not record.live or not record.account:
            raise ApiError(409, "NotLive", f"this onboarding is {record.status}: nothing to verify", "id")
        report = svc.verification(caller, record)
        body = report.as_dict()
        body["onboardingStatus"] = record.status
        return json_response(body)

    return handle_errors(handle, req, "/api/onboardings/{id}/verification")
