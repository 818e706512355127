"""Proving access the way a pod does: exchange a service account token at Entra, read the OpenAI data plane.

Why: see shared.domain.access_proof. This module is the I/O of the last two stages (the token comes
from the cluster: shared.adapters.kube / runcommand). The exchange is azure-identity's
ClientAssertionCredential — the same client-assertion flow WorkloadIdentityCredential runs in the
pod from its token file — against KEYLESS_AUTHORITY_HOST, in the identity's tenant: one POST to
the tenant's token endpoint (azure-identity's own client, no MSAL discovery). The read is one
GET of the account's models with Entra's token: harmless, and it needs an OpenAI data action.

Nothing here keeps or logs a token: the cluster's token is handed to the credential and dropped,
Entra's is used for one request and dropped, and neither appears in any error text (an Entra error
description is cut to its first sentence, which names codes and ids only).
"""

from __future__ import annotations

import re
from typing import Any

from shared.adapters.counting import counting_hooks
from shared.domain import retry_policy
from shared.domain.access_proof import OPENAI_SCOPE, DataPlaneAnswer, EntraRefusal, TokenClaims
from shared.domain.settings import Settings

OPENAI_API_VERSION = "2024-10-21"
"""The newest GA data-plane api-version with `GET /openai/models` (Models_List, the authoring spec of
azure-rest-api-specs data-plane/AzureOpenAI; deployments are no longer listed by the data plane after
2022-12-01)."""
_AADSTS = re.compile(r"\bAADSTS\d{5,7}\b")


def token_claims(token: str) -> TokenClaims:
    """The claims of the cluster's token, unverified (we asked the cluster for it ourselves; Entra
    verifies it). Raises ValueError when it is not a JWT."""
    import datetime as dt

    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ValueError(f"the cluster's token is not a JWT ({type(exc).__name__})") from None
    audiences = claims.get("aud") or []
    exp = claims.get("exp")
    expires = (
        dt.datetime.fromtimestamp(exp, dt.UTC).isoformat(timespec="seconds") if isinstance(exp, int | float) else ""
    )
    return TokenClaims(
        issuer=str(claims.get("iss", "")),
        subject=str(claims.get("sub", "")),
        audiences=tuple([audiences] if isinstance(audiences, str) else audiences),
        expires_at=expires.replace("+00:00", "Z"),
    )


class AccessProbe:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def exchange(self, tenant_id: str, client_id: str, assertion: str, scope: str = OPENAI_SCOPE) -> str | EntraRefusal:
        """Entra's access token for `scope` (the data plane's), as the identity; or Entra's refusal."""
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
        from azure.identity import ClientAssertionCredential

        connect, read = retry_policy.ACCESS_PROOF.timeouts()
        options: dict[str, Any] = {
            "authority": self._settings.authority_host,
            "connection_timeout": connect,
            "read_timeout": read,
            **retry_policy.ACCESS_PROOF.retry.kwargs(),
        }
        if self._settings.ca_bundle:
            options["connection_verify"] = self._settings.ca_bundle
        credential = ClientAssertionCredential(tenant_id, client_id, lambda: assertion, **options)
        try:
            return credential.get_token(scope).token
        except ClientAuthenticationError as exc:
            return _refusal(exc)
        except (ServiceRequestError, ServiceResponseError):
            return EntraRefusal("", None, "Entra did not answer")
        finally:
            credential.close()

    def read_models(self, endpoint: str, access_token: str) -> DataPlaneAnswer:
        """One GET of the account's models with the identity's token; its status and error code."""
        from azure.core import PipelineClient
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
        from azure.core.pipeline.policies import (
            CustomHookPolicy,
            DistributedTracingPolicy,
            RetryPolicy,
            UserAgentPolicy,
        )
        from azure.core.pipeline.transport import RequestsTransport
        from azure.core.rest import HttpRequest

        connect, read = retry_policy.ACCESS_PROOF.timeouts()
        transport = RequestsTransport(connection_verify=self._settings.ca_bundle or True)
        policies = [
            UserAgentPolicy("keyless"),
            RetryPolicy(**retry_policy.ACCESS_PROOF.retry.kwargs()),
            CustomHookPolicy(**counting_hooks("openai")),
            DistributedTracingPolicy(),  # a client span in the verification's trace, as azure-core's clients have
        ]
        base = endpoint if endpoint.endswith("/") else endpoint + "/"
        request = HttpRequest(
            "GET",
            f"{base}openai/models",
            params={"api-version": OPENAI_API_VERSION},
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        client: PipelineClient[Any, Any] = PipelineClient(base, policies=policies, transport=transport)
        with client:
            try:
                response = client.send_request(request, connection_timeout=connect, read_timeout=read)
            except (ServiceRequestError, ServiceResponseError):
                return DataPlaneAnswer(503, "Unreachable", "the endpoint did not answer")
            code, message = _error_of(response)
            return DataPlaneAnswer(response.status_code, code, message)


def _refusal(exc: Any) -> EntraRefusal:
    text = str(getattr(exc, "message", "") or exc)
    found = _AADSTS.search(text)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is None and found:
        status = 400  # MSAL's errors carry Entra's body, not its status: a refusal with a code is a 4xx
    description = ""
    if found:
        description = text[found.start() :].split(". ", 1)[0].split("\n", 1)[0][:200]
    return EntraRefusal(found.group(0) if found else "", status, description)


def _error_of(response: Any) -> tuple[str, str]:
    """The data plane's error code and message (`{"error": {"code", "message"}}`), '' on success."""
    if 200 <= response.status_code < 300:
        return "", ""
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - a non-JSON body simply has no code
        return "", (response.text() or "")[:200]
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    if isinstance(error, dict):  # {"error": {"code", "message"}}
        return str(error.get("code") or ""), str(error.get("message") or "")[:300]
    # The token checks answer {"statusCode": 401, "message": "Unauthorized. Access token is missing, ..."}.
    return str(body.get("statusCode") or ""), str(body.get("message") or "")[:300]
