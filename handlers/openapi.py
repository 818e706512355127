"""The OpenAPI 3 description of the self-service API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Keyless self-service API",
        "version": "1.0.0",
        "description": "Ask for passwordless (Entra Workload ID) access from an AKS service account to an "
        "Azure OpenAI account. Requests are queued and reconciled; poll the onboarding for its status.",
    },
    "servers": [{"url": "/api"}],
    "security": [{"functionKey": []}],
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
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OnboardingRequest"}}},
                },
                "responses": {
                    "202": {
                        "description": "Accepted and queued",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Onboarding"}}},
                    },
                    "200": {
                        "description": "Already requested (the existing onboarding), or the dry-run plan",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Onboarding"},
                                        {"$ref": "#/components/schemas/Plan"},
                                    ]
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "413": _ERROR,
                    "415": _ERROR,
                    "503": _ERROR,
                },
            },
            "get": {
                "operationId": "listOnboardings",
                "summary": "List onboardings, paged",
                "parameters": [
                    {"name": "cluster", "in": "query", "schema": {"type": "string"}},
                    {"name": "namespace", "in": "query", "schema": {"type": "string"}},
                    {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "continuationToken", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "A page",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["value"],
                                    "properties": {
                                        "value": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Onboarding"},
                                        },
                                        "continuationToken": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/onboardings/{id}": {
            "get": {
                "operationId": "getOnboarding",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "The onboarding",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Onboarding"}}},
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            },
            "delete": {
                "operationId": "deleteOnboarding",
                "summary": "Offboard: remove what Keyless created for this binding",
                "parameters": [_ID],
                "responses": {
                    "202": {
                        "description": "Offboarding queued",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Onboarding"}}},
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/onboardings/{id}/verification": {
            "get": {
                "operationId": "verifyOnboarding",
                "summary": "Check, live, that the binding works keyless: each check pass/fail/pending with evidence",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "The verification report",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Verification"}}},
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                    "409": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        "/openapi.json": {
            "get": {"operationId": "openapi", "security": [], "responses": {"200": {"description": "This document"}}}
        },
        "/health": {
            "get": {
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": {"description": "Storage reachable"},
                    "503": {"description": "Storage unreachable"},
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        "responses": {
            "Error": {
                "description": "Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "OnboardingRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["cluster", "namespace", "serviceAccount", "openAIAccount"],
                "properties": {
                    "cluster": {
                        "type": "string",
                        "description": "AKS managed cluster resource id",
                        "example": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/"
                        "providers/Microsoft.ContainerService/managedClusters/aks1",
                    },
                    "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "serviceAccount": {"type": "string", "maxLength": 253},
                    "openAIAccount": {"type": "string", "description": "Microsoft.CognitiveServices/accounts id"},
                    "role": {
                        "type": "string",
                        "description": "role definition GUID or name on the allowlist; "
                        "default Cognitive Services OpenAI User",
                    },
                    "workloads": {
                        "type": "array",
                        "maxItems": 20,
                        "items": {"type": "string", "maxLength": 253},
                        "description": "Deployments in the namespace to enforce: pod template patched to use the "
                        "service account, the workload identity label and the ConfigMap; API-key variables removed. "
                        "Not part of the onboarding's id: asking again with another list updates it.",
                    },
                },
            },
            "Step": {
                "type": "object",
                "required": ["step", "outcome"],
                "properties": {
                    "step": {"type": "string"},
                    "outcome": {
                        "type": "string",
                        "enum": [
                            "created",
                            "updated",
                            "unchanged",
                            "deleted",
                            "absent",
                            "not-yet",
                            "failed",
                            "skipped",
                        ],
                    },
                    "reason": {"type": "string"},
                    "delaySeconds": {"type": "number"},
                    "details": {"type": "object"},
                },
            },
            "Onboarding": {
                "type": "object",
                "required": ["id", "status", "cluster", "namespace", "serviceAccount"],
                "properties": {
                    "id": {"type": "string"},
                    "cluster": {"type": "string"},
                    "namespace": {"type": "string"},
                    "serviceAccount": {"type": "string"},
                    "openAIAccount": {"type": "string"},
                    "roleDefinitionId": {"type": "string"},
                    "workloads": {"type": "array", "items": {"type": "string"}},
                    "verification": {
                        "type": "object",
                        "description": "the last verification the worker ran: status, checkedAt, open checks",
                    },
                    "desired": {"type": "string", "enum": ["present", "absent"]},
                    "status": {
                        "type": "string",
                        "enum": [
                            "pending",
                            "reconciling",
                            "ready",
                            "verified",
                            "not-ready",
                            "failed",
                            "refused",
                            "revoked",
                            "offboarding",
                            "removed",
                        ],
                    },
                    "reason": {"type": "string"},
                    "nextAttemptAt": {"type": "string", "nullable": True},
                    "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                    "identity": {
                        "type": "object",
                        "properties": {
                            "resourceId": {"type": "string"},
                            "clientId": {"type": "string"},
                            "principalId": {"type": "string"},
                            "tenantId": {"type": "string"},
                        },
                    },
                    "federatedCredential": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "issuer": {"type": "string"},
                            "subject": {"type": "string"},
                        },
                    },
                    "roleAssignmentId": {"type": "string", "nullable": True},
                    "kubernetesObjects": {"type": "array", "items": {"type": "string"}},
                    "attempts": {"type": "integer"},
                    "lastError": {"type": "string"},
                    "lastRequests": {"type": "object"},
                    "revokedAt": {
                        "type": "string",
                        "nullable": True,
                        "description": "when the one door first refused this binding after access had been granted",
                    },
                    "offboardAt": {
                        "type": "string",
                        "nullable": True,
                        "description": "a revoked binding is offboarded then, unless the grant comes back",
                    },
                    "requestedBy": {"type": "string"},
                    "source": {"type": "string"},
                    "createdAt": {"type": "string"},
                    "updatedAt": {"type": "string"},
                },
            },
            "Verification": {
                "type": "object",
                "required": ["id", "status", "checks"],
                "properties": {
                    "id": {"type": "string"},
                    "status": {"type": "string", "enum": ["pass", "fail", "pending"]},
                    "onboardingStatus": {"type": "string"},
                    "checkedAt": {"type": "string"},
                    "checks": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "status"],
                            "properties": {
                                "name": {"type": "string"},
                                "status": {"type": "string", "enum": ["pass", "fail", "pending"]},
                                "reason": {"type": "string"},
                                "evidence": {"type": "object"},
                            },
                        },
                    },
                    "keylessAccount": {
                        "type": "object",
                        "properties": {
                            "account": {"type": "string"},
                            "localAuthEnabled": {"type": "boolean", "nullable": True},
                            "optedIn": {"type": "boolean", "nullable": True},
                            "wouldBreak": {"type": "array", "items": {"type": "object"}},
                            "blockers": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "what would break, among the onboardings your policy covers",
                            },
                            "hiddenBlockers": {
                                "type": "integer",
                                "description": "how many more blockers belong to onboardings you may not see",
                            },
                        },
                    },
                },
            },
            "Plan": {
                "type": "object",
                "required": ["id", "plan"],
                "properties": {
                    "id": {"type": "string"},
                    "binding": {"type": "object"},
                    "grantedBy": {"type": "string", "description": "what allows it: the policy rule"},
                    "plan": {"type": "object"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    }
                },
            },
        },
    },
}
