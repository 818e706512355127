"""The OpenAPI 3.1 description of the self-service API (served at /api/openapi.json).

The paths, operations and response codes are written here; every body schema is generated from
the wire contracts (shared.app.contracts), so no enum or field is copied by hand. OpenAPI 3.1
schemas are JSON Schema 2020-12, so what pydantic makes is used as it is.

Built on the first call and kept: pydantic is heavy, and importing the app (what the host does
to index the functions) must not load it. tests/functions validates every response the tests
see against this document.
"""

from __future__ import annotations

import functools
from typing import Any

from handlers._http import MAX_PAGE_SIZE
from shared.domain.records import RECORD_STATUSES

SCHEMAS = "#/components/schemas/"


def _schema(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": "#/components/responses/Error"} for code in codes}


def _location(required: bool) -> dict[str, Any]:
    return {
        "Location": {
            "description": "the onboarding's URL",
            "required": required,
            "schema": {"type": "string", "examples": ["/api/onboardings/0123456789abcdef0123456789abcdef"]},
        }
    }


def _component_schemas(models: tuple[Any, ...]) -> dict[str, Any]:
    """Each model's JSON Schema under its class name, and the models it nests (its `$defs`) beside it."""
    from shared.app.contracts import WireSchema

    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=SCHEMAS + "{model}", schema_generator=WireSchema)
        for name, nested in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if schemas.setdefault(name, nested) != nested:
                raise ValueError(f"two wire models are both named {name}")
    return dict(sorted(schemas.items()))


@functools.cache
def document() -> dict[str, Any]:
    """The document (built once; do not change what it returns)."""
    from shared.app import contracts

    onboarding_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": contracts.ONBOARDING_ID_PATTERN},
    }
    onboarding = _schema(contracts.Onboarding.__name__)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keyless self-service API",
            "version": "1.0.0",
            "description": "Ask for passwordless (Entra Workload ID) access from an AKS service account to an "
            "Azure OpenAI account. Requests are queued and reconciled; poll the onboarding for its status.",
        },
        "servers": [{"url": "/api"}],
        "security": [{"entraId": []}],
        "paths": {
            "/onboardings": {
                "post": {
                    "operationId": "createOnboarding",
                    "summary": "Request an onboarding (idempotent)",
                    "parameters": [
                        {
                            "name": "dryRun",
                            "in": "query",
                            "schema": {"type": "boolean"},
                            "description": "Return the plan, computed with reads only; nothing is written.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _schema(contracts.OnboardingRequest.__name__)}},
                    },
                    "responses": {
                        "202": _json(onboarding, "Accepted and queued", _location(required=True)),
                        "200": _json(
                            {"oneOf": [onboarding, _schema(contracts.Plan.__name__)]},
                            "Already requested (the existing onboarding), or the dry-run plan",
                            _location(required=False),
                        ),
                        **_errors(400, 401, 403, 413, 415, 429, 503),
                    },
                },
                "get": {
                    "operationId": "listOnboardings",
                    "summary": "List onboardings, paged",
                    "description": "The onboardings the caller may see (asked for, or covered by their policy). "
                    "A request reads a bounded number of records (KEYLESS_LIST_SCAN_ROWS), so a page may "
                    "hold fewer than pageSize, even none, while a continuationToken says more may follow; "
                    "the list ends when a page has no continuationToken.",
                    "parameters": [
                        {"name": "cluster", "in": "query", "schema": {"type": "string"}},
                        {"name": "namespace", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "account",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "An Azure OpenAI account's resource id (any case): its onboardings only.",
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "One status or several, comma-separated (`failed,not-ready`): "
                            f"{', '.join(RECORD_STATUSES)}. A filter on what is read, so a page may be short.",
                        },
                        {
                            "name": "pageSize",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                        {
                            "name": "continuationToken",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "The continuationToken of the page before: opaque, the caller's own, "
                            "valid for an hour (a page may be asked again with it meanwhile); another caller's, "
                            "another list's or one run out is refused (400).",
                        },
                    ],
                    "responses": {
                        "200": _json(_schema(contracts.OnboardingPage.__name__), "A page"),
                        **_errors(400, 401, 503),
                    },
                },
            },
            "/onboardings/{id}": {
                "get": {
                    "operationId": "getOnboarding",
                    "parameters": [onboarding_id],
                    "responses": {"200": _json(onboarding, "The onboarding"), **_errors(400, 401, 403, 404, 503)},
                },
                "delete": {
                    "operationId": "deleteOnboarding",
                    "summary": "Offboard: remove what Keyless created for this binding",
                    "parameters": [onboarding_id],
                    "responses": {
                        "202": _json(onboarding, "Offboarding queued", _location(required=True)),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/onboardings/{id}/verification": {
                "get": {
                    "operationId": "verifyOnboarding",
                    "summary": "Check, live, that the binding works keyless: "
                    "each check pass/fail/pending with evidence",
                    "parameters": [onboarding_id],
                    "responses": {
                        "200": _json(_schema(contracts.Verification.__name__), "The verification report"),
                        **_errors(400, 401, 403, 404, 409, 429, 503),
                    },
                }
            },
            "/sweeps/latest": {
                "get": {
                    "operationId": "latestSweep",
                    "summary": "The current (or last) drift sweep's progress",
                    "description": "Counts only (clusters checked of all, suspects, reconciles queued), no "
                    "binding's name: any signed-in caller may see it.",
                    "responses": {
                        "200": _json(_schema(contracts.SweepProgress.__name__), "The sweep"),
                        **_errors(401, 404, 503),
                    },
                }
            },
            "/me": {
                "get": {
                    "operationId": "whoAmI",
                    "summary": "Who you are to Keyless, and what you may ask for",
                    "description": "The access-policy rules that name you (never another team's), what of you each "
                    "names, and how much of each rule's quota is used.",
                    "responses": {
                        "200": _json(_schema(contracts.Me.__name__), "You, and your rules"),
                        **_errors(401, 503),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object", "required": ["openapi", "info", "paths"]}, "This document")
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": _json(_schema(contracts.Health.__name__), "Every check passes"),
                        "503": _json(_schema(contracts.Health.__name__), "A check fails: its message names the fix"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "entraId": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An Entra ID access token for the API's app registration, checked by App "
                    "Service Authentication in front of the app: `az account get-access-token --resource "
                    "api://<client id> --query accessToken -o tsv`. No function key.",
                }
            },
            "responses": {"Error": _json(_schema(contracts.Error.__name__), "Error")},
            "schemas": _component_schemas(contracts.RESPONSES + contracts.DOCUMENTS),
        },
    }
