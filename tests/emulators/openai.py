"""A strict local stand-in for the Azure OpenAI data plane: the harmless authenticated reads that prove a principal
can use an account, checked the way the service checks them.

Why: Keyless's promise is that a workload's identity can *use* its Azure OpenAI account with no key. Whether it can
is decided here, not in ARM: the account's network rules, `disableLocalAuth`, the Entra token (signature, issuer,
audience, lifetime, tenant) and the data actions of the principal's role assignments at the account or above. This
emulator decides it from the ARM emulator's state, read afresh on every request, so a later PATCH of the account or a
new / deleted role assignment counts at once (`role_propagation_seconds` models the minutes Azure takes).

Routing. A real endpoint is `https://{customSubDomainName}.openai.azure.com/` (the account's `properties.endpoint`,
`endpoints["OpenAI Language Model Instance API"]`), a host tests cannot serve. This emulator serves
`https://127.0.0.1:PORT/{subdomain}/openai/...`, and `ArmEmulator(openai_endpoint_base=emulator.endpoint_base)` (or the
attribute, set before seeding) makes OpenAI and AIServices accounts with a custom subdomain say so. Only those kinds
are reachable; an account without a custom subdomain has no Entra-capable endpoint (AZURE-FACTS) and is not either.

Operations (GET only), from the published data-plane specs (Azure/azure-rest-api-specs,
specification/cognitiveservices/data-plane/AzureOpenAI/authoring/stable/):
- `Models_List` GET /openai/models and `Models_Get` GET /openai/models/{model-id}: in every stable authoring spec,
  the newest being 2024-10-21/azureopenai.json (commit 3ecc2097, `x-ms-client-default` 2024-10-21), which has no
  /deployments path any more. Shape: ModelList `{"object": "list", "data": [Model]}`, Model with `capabilities`
  (fine_tune, inference, completion, chat_completion, embeddings), `lifecycle_status`, `deprecation`; the 2022-12-01
  Capabilities has `scale_types` and no `chat_completion`. Data action `.../accounts/OpenAI/models/read`.
- `Deployments_List` GET /openai/deployments and `Deployments_Get` GET /openai/deployments/{deployment-id}: only in
  the 2022-12-01 stable spec (04c2cb7b); the data plane dropped them from 2023-05-15 on (Learn Q&A 1617987: "the API
  has been removed from the data plane", use ARM's `.../accounts/{name}/deployments`). Shape: DeploymentList,
  Deployment `{object: "deployment", id, model, owner, status, scale_settings, created_at, updated_at}`. Data action
  `.../accounts/OpenAI/deployments/read`. Data actions: Azure permissions reference, "Microsoft.CognitiveServices"
  (MicrosoftDocs/azure-docs articles/role-based-access-control/permissions/ai-machine-learning.md).
The models listed are the models of the account's deployments (the real list is the region's whole catalogue).
Model ids are `{name}-{version}`, or the bare name for version "1", as listings of real accounts show
(`gpt-4o-2024-08-06`, `text-embedding-ada-002-2`, `text-embedding-3-large`, `dall-e-3-3.0`: yydoow/intro_to_llm_agents
azure/direct_azure_test.md, rijnb/chatty-server pages/api/models.ts); capabilities are derived from the name
(embeddings or chat), `created_at` from a date-like version. Every answer carries `apim-request-id` (the inference
spec's response header).

Checks, in this order (the first failing one answers):
1. `{subdomain}` names a served account (deleted, other kind, no such subdomain: 404).
2. Network: `publicNetworkAccess: Disabled` -> 403; `networkAcls.defaultAction: Deny` -> 403 unless the caller's IP
   (127.0.0.1) is in `ipRules` (an IP or a CIDR); `virtualNetworkRules` never match a loopback caller.
3. Authentication. `Authorization: Bearer` -> an RS256 JWT verified against `token_keys()` (a JWKS; the Entra
   emulator's `jwks()`) by `kid`; `iss` `https://sts.windows.net/{tid}/` (v1) or
   `https://login.microsoftonline.com/{tid}/v2.0` (v2); `aud` `https://cognitiveservices.azure.com` with or without
   the trailing slash (both forms appear in the service's own 401 message, issues below); `tid` = the ARM emulator's
   tenant; `exp` / `nbf` against the `Clock` with 5 minutes' skew; an `oid` is the principal. Else `api-key` -> 403
   when the account's `disableLocalAuth` is true, 401 unless it is a key set with `set_api_keys` (the ARM emulator
   has no listKeys). Neither -> the token 401.
4. Path and api-version: unknown path, or an operation the api-version does not have -> 404; no api-version -> 404;
   an api-version the emulator does not model (previews, made-up dates) -> 400.
5. Authorization (tokens only): a role assignment of `oid` at the account, its resource group, its subscription or
   `/`, older than `role_propagation_seconds` on the Clock, whose role definition (ARM `role_definition`) has a
   `dataActions` pattern matching the operation's data action and no matching `notDataActions` in the same
   permission block (`*` matches any run of characters, case-insensitive, as Azure RBAC wildcards do).

Error bodies, exact text, and where they come from ("guess" = not found in public material):
- 401 `{"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, audience is incorrect
  (https://cognitiveservices.azure.com), or have expired."}` (note: not the `{"error": ...}` shape): any token
  failure, and no credential at all (guess for that case). Azure-Samples/azure-search-openai-demo #458 and #2219,
  run-llama/llama_index #12484, langchain-ai/langchain #17373.
- 401 `{"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint.
  Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your
  resource."}}`: a wrong key. SciSharp/BotSharp #386 (body and `Status: 401 (PermissionDenied)`), microsoft/
  kernel-memory #325, microsoft/semantic-kernel #10337.
- 403 `{"error": {"code": "AuthenticationTypeDisabled", "message": "Key based authentication is disabled for this
  resource."}}`: any key while disableLocalAuth is true. microsoft/sample-app-aoai-chatGPT #1000,
  Azure-Samples/azure-search-openai-demo #1617, browser-use/browser-use #1295.
- 401 `{"error": {"code": "PermissionDenied", "message": "Principal does not have access to API/Operation."}}`: a
  valid token without the data action. Azure-Samples/azure-ai-studio-secure-bicep #17, microsoft/semantic-kernel
  #10020, Azure-Samples/azure-search-openai-demo #290. It is **401, not 403**, on *.openai.azure.com. The "The
  principal `...` lacks the required data action `...` to perform `...` operation" text (also 401 PermissionDenied)
  is the Foundry project API's (`/api/projects/...` on services.ai.azure.com: davrous/AzureAgentToM365 #3,
  microsoft/ai-agent-evals #43), not this endpoint's.
- 403 `{"error": {"code": "403", "message": "Access denied due to Virtual Network/Firewall rules."}}`.
  Azure-Samples/azure-sql-db-chatbot #3 (with header `policy-id: ThrowExceptionDueToTrafficDenied`),
  Azure-Samples/azure-search-openai-demo #1494.
- 403 `{"error": {"code": "403", "message": "Public access is disabled. Please configure private endpoint."}}`.
  TabularEditor/TabularEditor3 #1557; Azure-Samples/azure-search-openai-demo #1157 shows azure-core's
  "(403) Public access is disabled. Please configure private endpoint" (so the code is "403").
- 404 `{"error": {"code": "404", "message": "Resource not found"}}`: unknown path, missing api-version, an unknown
  model id (guess for that case). MicrosoftDocs/azure-docs #114602 (404 without api-version), ThinkInAIXYZ/deepchat
  #262, MicrosoftDocs/azure-docs #110272.
- 400 `{"error": {"code": "BadRequest", "message": "API version not supported"}}`. hotovo/aider-desk #460.
- 404 `{"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist. If
  you created the deployment within the last 5 minutes, please wait a moment and try again."}}`: seen on inference
  calls (chatboxai/chatbox #861, Azure-Samples/azure-search-openai-demo-csharp #379); used for Deployments_Get too.
- 404 `{"error": {"code": "404", "message": "Subdomain does not map to a resource."}}`: the message is the service's
  (Azure-Samples/azure-search-openai-demo #294 and #497); status and code are a guess (the Python SDK of the time
  raised InvalidRequestError, its 404/400 class). For a subdomain nobody ever registered, DNS may not even resolve.

Not faithful: models are only the deployed ones; role assignment conditions (ABAC), deny assignments, group
membership, management-group scopes other than `/`, the Foundry (`services.ai.azure.com`) and inference paths are
not modelled; the order of checks 3-5 is a choice (the service documents none); nothing else (preview api-versions,
POST/PUT/DELETE) is served, it is refused. What the emulator keeps (`log`, `served`) never holds a token or a key:
`api-key` / `subscription-key` query parameters are redacted from the log.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jwt
from werkzeug.wrappers import Request, Response

from tests.emulators.common import Clock, HttpsServer, RecordedRequest, RequestLog, TestCA, bearer_token, json_response

if TYPE_CHECKING:
    from tests.emulators.arm import ArmEmulator

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
AUDIENCES = frozenset({"https://cognitiveservices.azure.com", "https://cognitiveservices.azure.com/"})
CLOCK_SKEW_SECONDS = 300.0
SERVED_KINDS = frozenset({"openai", "aiservices"})

MODELS_API_VERSIONS = ("2022-12-01", "2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21")
DEPLOYMENTS_API_VERSIONS = ("2022-12-01",)
KNOWN_API_VERSIONS = frozenset(MODELS_API_VERSIONS + DEPLOYMENTS_API_VERSIONS)
LATEST_GA_API_VERSION = "2024-10-21"

MODELS_READ = "Microsoft.CognitiveServices/accounts/OpenAI/models/read"
DEPLOYMENTS_READ = "Microsoft.CognitiveServices/accounts/OpenAI/deployments/read"

TOKEN_MESSAGE = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)
KEY_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
KEY_DISABLED_MESSAGE = "Key based authentication is disabled for this resource."
NO_ACCESS_MESSAGE = "Principal does not have access to API/Operation."
FIREWALL_MESSAGE = "Access denied due to Virtual Network/Firewall rules."
PUBLIC_ACCESS_MESSAGE = "Public access is disabled. Please configure private endpoint."
NOT_FOUND_MESSAGE = "Resource not found"
SUBDOMAIN_MESSAGE = "Subdomain does not map to a resource."
API_VERSION_MESSAGE = "API version not supported"
DEPLOYMENT_NOT_FOUND_MESSAGE = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)

_SECRET_QUERY_PARAMS = frozenset({"api-key", "subscription-key"})
_DEFAULT_CREATED_AT = 1672531200  # 2023-01-01: a model whose version is not a date
_TWO_YEARS = 2 * 365 * 86400


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def token_error_body() -> dict:
    return {"statusCode": 401, "message": TOKEN_MESSAGE}


class Served(NamedTuple):
    """One answered request: the operationId ("" when the path names none), the principal's object id or "key"
    ("" when nobody was authenticated), the HTTP status."""

    operation: str
    principal: str
    status: int


class _Refusal(Exception):
    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class _Route(NamedTuple):
    operation: str
    data_action: str
    api_versions: tuple[str, ...]
    item: str | None  # the {model-id} / {deployment-id}


def _route(method: str, rest: str) -> _Route | None:
    """The operation `GET /openai{rest}` names, whatever the api-version."""
    if method != "GET":
        return None
    parts = [urllib.parse.unquote(p) for p in rest.strip("/").split("/")] if rest.strip("/") else []
    if parts[:1] == ["models"] and len(parts) <= 2:
        op = "Models_Get" if len(parts) == 2 else "Models_List"
        return _Route(op, MODELS_READ, MODELS_API_VERSIONS, parts[1] if len(parts) == 2 else None)
    if parts[:1] == ["deployments"] and len(parts) <= 2:
        op = "Deployments_Get" if len(parts) == 2 else "Deployments_List"
        return _Route(op, DEPLOYMENTS_READ, DEPLOYMENTS_API_VERSIONS, parts[1] if len(parts) == 2 else None)
    return None


def _key(resource_id: str) -> str:
    """Case-insensitive form of a resource id or scope ("/" for the root)."""
    return "/" + "/".join(p for p in resource_id.lower().split("/") if p)


def _epoch(iso: str | None) -> float:
    if not iso:
        return float("-inf")
    return datetime.datetime.fromisoformat(iso).timestamp()


def rbac_matches(pattern: str, action: str) -> bool:
    """Azure RBAC wildcard matching: `*` stands for any run of characters (slashes too), case-insensitive."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, action, flags=re.IGNORECASE) is not None


def grants(permissions: list[dict], data_action: str) -> bool:
    """Whether a role definition's permission blocks allow `data_action` (notDataActions subtract per block)."""
    return any(
        any(rbac_matches(p, data_action) for p in block.get("dataActions") or [])
        and not any(rbac_matches(p, data_action) for p in block.get("notDataActions") or [])
        for block in permissions
    )


def model_id(name: str, version: str) -> str:
    return name if version in ("", "1") else f"{name}-{version}"


def _created_at(version: str) -> int:
    try:
        return int(datetime.datetime.strptime(version, "%Y-%m-%d").replace(tzinfo=datetime.UTC).timestamp())
    except ValueError:
        return _DEFAULT_CREATED_AT


class OpenAIEmulator:
    """HTTPS Azure OpenAI data-plane stand-in over an ArmEmulator; see the module docstring.

    Knobs (plain attributes): `role_propagation_seconds` (0: an assignment counts at once), `token_keys` (a callable
    returning the JWKS tokens are checked against). Keys: `set_api_keys(account_id, *keys)`. Readers: `log` (every
    request, secrets redacted), `served` (a list of `Served(operation, principal, status)`)."""

    def __init__(
        self,
        ca: TestCA,
        arm: ArmEmulator,
        *,
        token_keys: Callable[[], dict],
        clock: Clock | None = None,
        role_propagation_seconds: float = 0.0,
    ) -> None:
        self.ca = ca
        self.arm = arm
        self.token_keys = token_keys
        self.clock = clock or arm.clock
        self.log = RequestLog()
        self.url = ""
        self._lock = threading.Lock()
        self._server: HttpsServer | None = None
        self._reset_state(role_propagation_seconds)

    def _reset_state(self, role_propagation_seconds: float = 0.0) -> None:
        self.role_propagation_seconds = role_propagation_seconds
        self.served: list[Served] = []
        self._api_keys: dict[str, tuple[str, ...]] = {}  # _key(account id) -> keys

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> OpenAIEmulator:
        self._server = HttpsServer(self._wsgi, self.ca).start()
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if not self._server:
            return
        server, self._server = self._server, None
        server.stop()

    def reset(self) -> None:
        """Forget keys, served requests and knob settings; the server keeps running, the log is cleared."""
        with self._lock:
            self._reset_state()
        self.log.clear()

    @property
    def endpoint_base(self) -> str:
        """What to give ArmEmulator as `openai_endpoint_base`: an account's endpoint is then `{this}{subdomain}/`."""
        return f"{self.url}/"

    # ------------------------------------------------------------------ seeding

    def set_api_keys(self, account_id: str, *keys: str) -> None:
        """The account's keys (key1, key2); none = no key is valid."""
        with self._lock:
            self._api_keys[_key(account_id)] = tuple(keys)

    # ------------------------------------------------------------------ HTTP

    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        call = {"operation": "", "principal": ""}
        try:
            response = self._handle(request, call)
        except _Refusal as e:
            response = json_response(e.body, e.status, e.headers.items())
        except Exception as e:  # noqa: BLE001 - an emulator bug: answer 500, but say what broke
            response = json_response(error_body("InternalServerError", f"emulator bug: {e!r}"), 500)
        response.headers["apim-request-id"] = str(uuid.uuid4())
        query = urllib.parse.urlencode(
            [(k, "REDACTED" if k.lower() in _SECRET_QUERY_PARAMS else v) for k, v in request.args.items(multi=True)]
        )
        content_type = request.headers.get("Content-Type", "")
        self.log.add(RecordedRequest(request.method, request.path, query, response.status_code, content_type))
        with self._lock:
            self.served.append(Served(call["operation"], call["principal"], response.status_code))
        return response(environ, start_response)

    def _handle(self, request: Request, call: dict[str, str]) -> Response:
        m = re.fullmatch(r"/([^/]+)/openai(/.*)?", request.path)
        if not m:
            raise _Refusal(404, error_body("404", NOT_FOUND_MESSAGE))
        route = _route(request.method, m[2] or "")
        call["operation"] = route.operation if route else ""
        account = self._account(m[1])
        self._check_network(account, request.remote_addr or "")
        call["principal"] = principal = self._authenticate(request, account)
        api_version = request.args.get("api-version")
        if route is None or not api_version:
            raise _Refusal(404, error_body("404", NOT_FOUND_MESSAGE))
        if api_version not in KNOWN_API_VERSIONS:
            raise _Refusal(400, error_body("BadRequest", API_VERSION_MESSAGE))
        if api_version not in route.api_versions:
            raise _Refusal(404, error_body("404", NOT_FOUND_MESSAGE))
        if principal != "key" and not self._authorized(principal, account["id"], route.data_action):
            raise _Refusal(401, error_body("PermissionDenied", NO_ACCESS_MESSAGE))
        return self._serve(route, account, api_version)

    # ------------------------------------------------------------------ the checks

    def _account(self, subdomain: str) -> dict:
        """The served account whose customSubDomainName is `subdomain`, as ARM holds it now."""
        for kind, body in self.arm.indexed_resources():
            props = body.get("properties") or {}
            if (
                kind == "account"
                and str(body.get("kind", "")).lower() in SERVED_KINDS
                and str(props.get("customSubDomainName") or "").lower() == subdomain.lower()
            ):
                return body
        raise _Refusal(404, error_body("404", SUBDOMAIN_MESSAGE))

    @staticmethod
    def _check_network(account: dict, caller_ip: str) -> None:
        props = account.get("properties") or {}
        if str(props.get("publicNetworkAccess") or "Enabled").lower() == "disabled":
            raise _Refusal(403, error_body("403", PUBLIC_ACCESS_MESSAGE))
        acls = props.get("networkAcls") or {}
        if str(acls.get("defaultAction") or "Allow").lower() != "deny":
            return
        try:
            ip = ipaddress.ip_address(caller_ip)
        except ValueError:
            ip = None
        for rule in acls.get("ipRules") or []:
            try:
                if ip is not None and ip in ipaddress.ip_network(str(rule.get("value", "")), strict=False):
                    return
            except ValueError:
                continue
        headers = {"policy-id": "ThrowExceptionDueToTrafficDenied"}
        raise _Refusal(403, error_body("403", FIREWALL_MESSAGE), headers)

    def _authenticate(self, request: Request, account: dict) -> str:
        """The caller's object id, or "key"."""
        if request.headers.get("Authorization"):
            return self._principal_of(bearer_token(request))
        key = request.headers.get("api-key")
        if not key:
            raise _Refusal(401, token_error_body())
        if (account.get("properties") or {}).get("disableLocalAuth") is True:
            raise _Refusal(403, error_body("AuthenticationTypeDisabled", KEY_DISABLED_MESSAGE))
        with self._lock:
            keys = self._api_keys.get(_key(account["id"]), ())
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
            raise _Refusal(401, error_body("401", KEY_MESSAGE))
        return "key"

    def _principal_of(self, token: str | None) -> str:
        refused = _Refusal(401, token_error_body())
        if not token:
            raise refused
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "RS256":
                raise refused
            keys = [k for k in jwt.PyJWKSet.from_dict(self.token_keys()).keys if k.key_id == header.get("kid")]
        except jwt.PyJWTError:
            raise refused from None
        claims = None
        for k in keys:
            try:
                claims = jwt.decode(
                    token,
                    k.key,
                    algorithms=["RS256"],
                    options={  # checked below against the emulator's Clock and tenant
                        "verify_aud": False,
                        "verify_iss": False,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
                break
            except jwt.PyJWTError:
                continue
        if claims is None:
            raise refused
        tenant = self.arm.tenant_id.lower()
        aud = claims.get("aud")
        audiences: list[Any] = aud if isinstance(aud, list) else [aud]
        issuers = {f"https://sts.windows.net/{tenant}/", f"https://login.microsoftonline.com/{tenant}/v2.0"}
        now = self.clock.now()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if (
            not any(a in AUDIENCES for a in audiences)
            or str(claims.get("tid", "")).lower() != tenant
            or str(claims.get("iss", "")).lower() not in issuers
            or not isinstance(exp, int | float)
            or now > exp + CLOCK_SKEW_SECONDS
            or (nbf is not None and (not isinstance(nbf, int | float) or now + CLOCK_SKEW_SECONDS < nbf))
            or not claims.get("oid")
        ):
            raise refused
        return str(claims["oid"])

    def _authorized(self, principal_id: str, account_id: str, data_action: str) -> bool:
        account, now = _key(account_id), self.clock.now()
        for ra in self.arm.role_assignments():
            p = ra["properties"]
            scope = _key(p["scope"])
            if p["principalId"].lower() != principal_id.lower():
                continue
            if not (scope == "/" or scope == account or account.startswith(scope + "/")):
                continue
            if now - _epoch(p.get("createdOn")) < self.role_propagation_seconds:
                continue  # not propagated to the data plane yet
            role = self.arm.role_definition(p["roleDefinitionId"])
            if role and grants(role["properties"].get("permissions") or [], data_action):
                return True
        return False

    # ------------------------------------------------------------------ the operations

    def _serve(self, route: _Route, account: dict, api_version: str) -> Response:
        deployments = sorted(self.arm.deployments(account["id"]), key=lambda d: d["name"].lower())
        if route.operation.startswith("Models"):
            models: dict[str, dict] = {}
            for d in deployments:
                model = (d.get("properties") or {}).get("model") or {}
                entry = self._model_json(model.get("name", ""), str(model.get("version", "")), api_version)
                models.setdefault(entry["id"], entry)
            if route.item is None:
                return json_response({"object": "list", "data": list(models.values())})
            if route.item not in models:
                raise _Refusal(404, error_body("404", NOT_FOUND_MESSAGE))  # guess
            return json_response(models[route.item])
        items = [self._deployment_json(d, account) for d in deployments]
        if route.item is None:
            return json_response({"object": "list", "data": items})
        found = next((d for d in items if d["id"].lower() == route.item.lower()), None)
        if found is None:
            raise _Refusal(404, error_body("DeploymentNotFound", DEPLOYMENT_NOT_FOUND_MESSAGE))
        return json_response(found)

    @staticmethod
    def _model_json(name: str, version: str, api_version: str) -> dict:
        embeddings = "embedding" in name.lower()
        if api_version == "2022-12-01":  # its Capabilities: scale_types, no chat_completion
            capabilities: dict[str, Any] = {"fine_tune": False, "inference": True, "completion": False,
                                            "embeddings": embeddings, "scale_types": ["standard"]}  # fmt: skip
        else:
            capabilities = {"fine_tune": False, "inference": True, "completion": False,
                            "chat_completion": not embeddings, "embeddings": embeddings}  # fmt: skip
        created = _created_at(version)
        return {
            "object": "model", "id": model_id(name, version), "status": "succeeded", "created_at": created,
            "capabilities": capabilities, "lifecycle_status": "generally-available",
            "deprecation": {"inference": created + _TWO_YEARS},
        }  # fmt: skip

    @staticmethod
    def _deployment_json(deployment: dict, account: dict) -> dict:
        props = deployment.get("properties") or {}
        model = props.get("model") or {}
        sku = deployment.get("sku") or {}
        if "standard" in str(sku.get("name", "Standard")).lower():  # Standard, GlobalStandard, DataZoneStandard
            scale: dict[str, Any] = {"scale_type": "standard"}
        else:
            scale = {"scale_type": "manual", "capacity": int(sku.get("capacity") or 1)}
        state = str(props.get("provisioningState", "Succeeded")).lower()
        status = {"succeeded": "succeeded", "failed": "failed", "canceled": "canceled", "deleting": "deleted"}.get(
            state, "running"
        )
        created = int(_epoch((account.get("properties") or {}).get("dateCreated") or "2023-01-01T00:00:00Z"))
        return {
            "object": "deployment", "status": status, "created_at": created, "updated_at": created,
            "id": deployment["name"], "model": model_id(model.get("name", ""), str(model.get("version", ""))),
            "owner": "organization-owner", "scale_settings": scale,
        }  # fmt: skip
