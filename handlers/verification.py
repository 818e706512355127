"""GET /api/onboardings/{id}/verification: is this binding really keyless, check by check?

Runs the checks live (reads only: ARM and the cluster) and answers the report: each check
`pass` / `fail` / `pending` with evidence, the overall status, and the account's keyless state
(whether keys still work, whether it opted in, what turning them off would break). The caller
must be allowed to read the onboarding (the same rule as GET /api/onboardings/{id}: one they may
not see answers 404, as one that does not exist).
"""

from __future__ import annotations

import logging

import azure.functions as func

from handlers._auth import handle_errors, onboarding_key, record_for, signed_in_caller
from handlers._http import ApiError, json_response
from shared.app import composition, self_service

bp = func.Blueprint()
log = logging.getLogger("keyless.verification")


@bp.function_name("onboardings_verification")
@bp.route(route="onboardings/{id}/verification", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def onboardings_verification(req: func.HttpRequest) -> func.HttpResponse:
    def handle(req: func.HttpRequest) -> func.HttpResponse:
        caller = signed_in_caller(req)
        svc = composition.service()
        record = record_for(caller, onboarding_key(req), "read")
        if not record.live or not record.account:
            raise ApiError(409, "NotLive", f"this onboarding is {record.status}: nothing to verify", "id")
        report = self_service.verification(svc, caller, record)
        body = report.as_dict()
        body["onboardingStatus"] = record.status
        return json_response(body)

    return handle_errors(handle, req, "/api/onboardings/{id}/verification")
