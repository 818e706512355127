"""A strict local stand-in for the Microsoft Entra ID token service, for the federated client-credentials flow.

Why: a pod with Entra Workload ID trades its Kubernetes service account token (a JWT from the cluster's
OIDC issuer, audience `api://AzureADTokenExchange`) for an Entra access token of a user-assigned managed
identity, trusted through a federated identity credential (FIC) on that identity. Whether that trade works
is what Keyless sets up, so the tests must run it for real: the real azure-identity credentials
(`WorkloadIdentityCredential`, `ClientAssertionCredential`, and MSAL itself) talk HTTPS to this emulator,
which checks the assertion as Entra does against the identities and FICs the ARM emulator holds and the
issuer documents the `IssuerDirectory` (tests.emulators.oidc) publishes.

What is served (an unknown path is 404, another method on the token path is refused as Entra does):

- `POST /{tenant}/oauth2/v2.0/token`, form-encoded: `grant_type=client_credentials`, `client_id`, `scope`,
  `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `client_assertion`.
  This is the only request azure-identity 1.27's `ClientAssertionCredential` and `WorkloadIdentityCredential`
  send: they use azure-identity's own `AadClient` (one POST to `{authority}/{tenant}/oauth2/v2.0/token`),
  not MSAL, so they do no discovery at all and `disable_instance_discovery` does not apply to them. What they
  need: `authority=<emulator url>` (or `AZURE_AUTHORITY_HOST`, which `get_default_authority()` reads) and
  `connection_verify=<CA bundle path>`, a keyword that reaches azure-core's `RequestsTransport`
  (`ConnectionConfiguration(connection_verify=...)`).
- `GET /{tenant}/v2.0/.well-known/openid-configuration`: MSAL's tenant discovery (msal/authority.py,
  `tenant_discovery`), which every MSAL application does in its constructor; MSAL then POSTs to the
  document's `token_endpoint`. Unknown tenant: 400 `invalid_tenant` AADSTS90002, which MSAL turns into
  ValueError("Unable to get authority configuration ...").
- `GET /common/discovery/instance?authorization_endpoint=...&api-version=1.0`: MSAL's instance discovery.
  For an authority host outside its well-known list MSAL sends it to **login.microsoftonline.com**, not to
  the authority, unless `instance_discovery=False` (azure-identity's MSAL-based credentials, e.g.
  CertificateCredential: `disable_instance_discovery=True`) or `instance_discovery="<emulator
  url>/common/discovery/instance"`. The latter only covers building the authority: on every acquire MSAL's
  token cache asks login.microsoftonline.com for host aliases (`_get_instance_metadata`) unless instance
  discovery is off, so `instance_discovery=False` is what keeps MSAL off the internet. MSAL drops the port
  from the `authorization_endpoint` it sends; another host there: 400 `invalid_instance` AADSTS50049.
  MSAL with its own `requests.Session`: set `trust_env = False`, or REQUESTS_CA_BUNDLE overrides its
  `verify` (azure-core passes `verify` per request, so `connection_verify` is not affected).
- `GET /{tenant}/discovery/v2.0/keys` and `GET /common/discovery/keys`: the JWKS of the key that signs the
  access tokens (`jwks()` gives the same in Python).

Validation, each failure as Entra answers (JSON `error`, `error_description` "AADSTSnnnnn: ... Trace ID: ...
Correlation ID: ... Timestamp: ...", `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`;
HTTP 401 for `invalid_client`, 400 otherwise), in this order (Entra publishes none; see "Order" below):

1. tenant path segment: unknown -> AADSTS90002 (`invalid_request` here, `invalid_tenant` on discovery);
   `common`/`organizations`/`consumers` -> AADSTS50059 (no tenant-identifying information);
2. method and parameters: not POST -> AADSTS900561; missing `grant_type`/`client_id`/`scope` (also: a body
   that is not form-encoded) -> AADSTS900144; another grant -> AADSTS70003; no assertion -> AADSTS7000218;
   another assertion type -> AADSTS90011;
3. client: no identity with that client id (case-insensitive) in that tenant, or one not replicated yet
   (`identity_propagation_seconds`) -> AADSTS700016 (`unauthorized_client`);
4. assertion not a JWT (or without iss/sub/aud/exp) -> AADSTS50027;
5. the identity's FICs (those visible yet, `credential_propagation_seconds`), exact strings: none with the
   assertion's issuer -> AADSTS700211; none with its subject -> AADSTS700213; none with its audience
   -> AADSTS700212 (with `legacy_no_match_error`, all three answer AADSTS70021 as Entra did until 2023);
6. the issuer's `{issuer}.well-known/openid-configuration` (its `issuer` equal to the FIC's) and `jwks_uri`,
   looked up in the IssuerDirectory: missing -> AADSTS50166 "Request to External OIDC endpoint failed."
   (`oidc_error_code`; AADSTS90061 in 2022 reports). An issuer missing its trailing slash is another issuer;
7. signing key: `kid` not in the issuer's JWKS -> AADSTS7000272; signature wrong -> AADSTS700027;
8. lifetime: `now > exp + skew` or `now < nbf - skew` -> AADSTS700024, skew `clock_skew_seconds` = 300
   (the 5 minutes of Microsoft.IdentityModel's default clock skew);
9. scope: each must end in `/.default` -> AADSTS1002012 (`invalid_scope`); more than one resource
   -> AADSTS28000; a resource outside `known_resources` (when set) -> AADSTS500011.

Success: `{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}`; the access token is a
v1.0 JWT signed RS256 with the emulator's key (header `kid` = `x5t`), claims as Entra issues them to a
managed identity: `aud` = the scope without `/.default`, `iss` = `https://sts.windows.net/{tenant}/` (also
`idp`), `tid`, `oid` = `sub` = the principalId, `appid` = the clientId, `appidacr` "2" (an assertion),
`idtyp` "app", `ver` "1.0", `xms_mirid` = the identity's resource id, `iat` = `nbf` = now - 5 min (Entra
back-dates them), `exp` = now + `token_lifetime_seconds` (86399: managed identity tokens live ~24 h).

Knobs (plain attributes): `credential_propagation_seconds` (a FIC younger than that is not visible yet, as
right after creation in Azure), `identity_propagation_seconds` (a new identity's service principal is not
replicated yet: AADSTS700016), `clock_skew_seconds`, `token_lifetime_seconds`, `legacy_no_match_error`,
`oidc_error_code`, `known_resources`, `verified_domains` (domain -> tenant id, accepted in the tenant path),
`directory_name` (named in AADSTS700016). Ages are measured on the `Clock` (the ARM emulator's unless
given). ARM records no creation time, so the emulator stamps identities and FICs when it first sees them:
what exists when it is built counts as old; afterwards it looks after every successful managed-identity
write the ARM emulator answers (a hook in `ArmEmulator.request_hooks`, put back if cleared) and at every
token request, so a FIC written through ARM is aged from that write and one seeded with `add_*` from the
next look. A `systemData.createdAt` in ARM's JSON, if ARM ever records it, is used instead.

Readers: `issued` (claims of every access token issued, never the token), `refusals` ((error code, client
id)), `log` (RequestLog), `jwks()`, `token_endpoint(tenant)`, `authority`, `access_token_issuer(tenant)`.

Order: Entra documents none. Evidence used: an issuer no FIC names is refused without fetching it (an
unreachable `https://kubernetes.default.svc.cluster.local` issuer got AADSTS70021, not an OIDC error:
Azure/azure-workload-identity#616), so FIC matching comes before the issuer fetch; the rest (client before
assertion, authentication before scope, subject before audience, signature before lifetime) is a guess.

Sources (stored issues/pages; wording copied from the real responses quoted there):
- 70021 (invalid_request, 400, "Assertion Issuer/Subject/Audience" form): Azure/azure-workload-identity#340,
  #616 and docs/book/src/troubleshooting.md; "can fail for minutes after creation": AZURE-FACTS.md.
- 700211 (invalid_client): Azure/azure-workload-identity#1200; 700213: Azure/login#482, #379, dotnet/maui#31978
  (the "Check your federated identity credential ..." wording, 2025); 700212: athenz AzureAccessTokenProviderTest
  (invalid_client with HTTP 401) and the spire/facets docs found by find_string ("wrong audience -> 700212").
- 700016 (unauthorized_client): microsoft/AzureMonitorAddonForSplunk#114, wazuh/wazuh#27069,
  MicrosoftDocs/azure-docs#21690.
- 90002 (invalid_tenant on discovery, invalid_request on the token endpoint): Azure/azure-cli#22145, #23130;
  microsoftarchive/BatchAI#31.
- 50059: MicrosoftDocs/azure-docs#24064, AzureAD/microsoft-authentication-library-for-python#141; client
  credentials must not use common/organizations: AzureAD/microsoft-authentication-library-for-dotnet#1384 and
  MSAL Python's DeprecationWarning (msal/application.py `_acquire_token_for_client`).
- 50027 "JWT token is invalid or malformed.": panva/openid-client#348.
- 90061 / 50166 "Request to External OIDC endpoint failed." (invalid_request, 400): azure-workload-identity#605,
  #608 (90061, 2022-10), #642 and #1130 (50166, 2022-11 and 2023-10).
- 7000272 "The certificate with identifier ... used to sign the federated credential could not be found in
  the metadata of identity provider ...": Azure/azure-workload-identity#1232 (invalid_client).
- 700027 "Client assertion contains an invalid signature. [Reason - ...]": Azure/azure-sdk-for-net#29007;
  the reason text "The provided signature value did not match the expected signature value." from
  Azure/azure-sdk-for-java#25109 (AADSTS50013).
- 700024 (invalid_client) and its "Current time: ..., assertion valid from ..., expiry time of assertion ..."
  wording: AzureAD/microsoft-authentication-library-for-dotnet#4951,
  AzureAD/microsoft-authentication-library-for-java#984.
- Clock skew 5 minutes: learn.microsoft.com IdentityConfiguration.DefaultMaxClockSkew ("The default maximum
  clock skew; 5 minutes"); coreos/go-oidc#326 ("clock skew similar to AzureAD ... 5 min").
- 1002012 (invalid_scope): MicrosoftDocs/azure-docs#99862, microsoftgraph/msgraph-sdk-python#181.
- 900144 (invalid_request): microsoftgraph/microsoft-graph-docs-contrib#1369 (a JSON body -> 'grant_type'),
  openid/AppAuth-iOS#671; 7000218 (invalid_client): haystackeditor/haystack-editor#41; 90011 "Unexpected
  client assertion type.": AzureAD/azure-activedirectory-library-for-ruby#53.
- invalid_client answered with HTTP 401: databricks/databricks-sdk-go#240, krizalys/onedrive-php-sdk#113
  (7000215), microsoft/Agents#202 (7002137).
- expires_in 86399 for a managed identity federated exchange: athenz AzureAccessTokenProviderTest; "Managed
  Identity tokens have a lifetime of around 24 hours": MicrosoftDocs/azure-devops-docs errors-workload-identity.md.
- Discovery document shape: Azure/azure-workload-identity#682 (MSAL's logged openid_config).
Not found in public material, marked "guess" where raised: AADSTS900561, 70003, 28000, 500011, 50049 wording
(from memory of Entra's error lookup), the issuer-mismatch-in-discovery case, and the status of 700016 (400).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import math
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from werkzeug.wrappers import Request, Response

from tests.emulators.common import Clock, HttpsServer, RecordedRequest, RequestLog, TestCA, json_response
from tests.emulators.oidc import DEFAULT_DIRECTORY, IssuerDirectory

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FIC_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_SCOPE_SUFFIX = "/.default"
MULTI_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})
WIF_DOC = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
LEGACY_WIF_DOC = "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
CERT_DOC = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"
BACKDATE_SECONDS = 300  # Entra sets iat = nbf = issue time - 5 min
_MSI_PATH = "microsoft.managedidentity"
_SIGNATURE_ONLY: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False}
_ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


class _Refusal(Exception):
    def __init__(self, code: int, error: str, message: str, status: int | None = None) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code, self.error, self.message = code, error, message
        self.status = status if status is not None else (401 if error == "invalid_client" else 400)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)


def _stamp(ts: float) -> str:
    """Entra's `timestamp` field: 2024-03-01 07:41:07Z."""
    return _utc(ts).strftime("%Y-%m-%d %H:%M:%SZ")


def _ticks(ts: float) -> str:
    """.NET round-trip time as in AADSTS700024: 2024-10-02T22:05:03.6755165Z (7 fractional digits)."""
    t = _utc(ts)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def _parse_iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _audiences(claim: Any) -> list[str]:
    if isinstance(claim, str):
        return [claim]
    if isinstance(claim, list):
        return [a for a in claim if isinstance(a, str)]
    return []


class _SigningKey:
    """RSA key plus a self-signed certificate, published as Entra publishes its keys (kid = x5t)."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.windows.net")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self.private, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        self.kid = _b64url(hashlib.sha1(der).digest())  # noqa: S324 - x5t is SHA-1 by definition (RFC 7517)
        numbers = self.private.public_key().public_numbers()
        self.jwk = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
            "x5c": [base64.b64encode(der).decode()],
        }


class EntraEmulator:
    """HTTPS Entra ID token service for federated client credentials; see the module docstring."""

    def __init__(
        self,
        ca: TestCA,
        arm: Any,
        *,
        directory: IssuerDirectory | None = None,
        clock: Clock | None = None,
        tenants: Iterable[str] = (),
        verified_domains: dict[str, str] | None = None,
    ) -> None:
        """`arm`: a tests.emulators.arm.ArmEmulator (read through identities() and federated_credentials());
        `tenants`: tenant ids known besides the ARM emulator's and its identities'."""
        self.ca = ca
        self.arm = arm
        self.directory = directory if directory is not None else DEFAULT_DIRECTORY
        self.clock = clock or arm.clock
        self.extra_tenants = {t.lower() for t in tenants}
        self.verified_domains = {d.lower(): t for d, t in (verified_domains or {}).items()}
        # knobs
        self.credential_propagation_seconds = 0.0
        self.identity_propagation_seconds = 0.0
        self.clock_skew_seconds = 300.0
        self.token_lifetime_seconds = 86399
        self.legacy_no_match_error = False
        self.oidc_error_code = 50166
        self.known_resources: set[str] | None = None
        self.directory_name = "Default Directory"
        # readers
        self.log = RequestLog()
        self.issued: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, str | None]] = []
        self.url = ""
        self._key = _SigningKey()
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._server: HttpsServer | None = None
        self._observe(initial=True)
        self._hook_arm()

    # ------------------------------------------------------------------ lifecycle and readers

    def start(self) -> EntraEmulator:
        self._server = HttpsServer(self._wsgi, self.ca).start()
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server:
            server, self._server = self._server, None
            server.stop()
        self._unhook_arm()

    @property
    def authority(self) -> str:
        """What azure-identity takes as `authority` (or AZURE_AUTHORITY_HOST): the emulator's base URL."""
        return self.url

    def token_endpoint(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    @staticmethod
    def access_token_issuer(tenant_id: str) -> str:
        return f"https://sts.windows.net/{tenant_id}/"

    def jwks(self) -> dict[str, Any]:
        """The JWKS the access tokens verify with (also served at /{tenant}/discovery/v2.0/keys)."""
        return {"keys": [dict(self._key.jwk, x5c=list(self._key.jwk["x5c"]))]}

    def known_tenants(self) -> set[str]:
        tenants = {self.arm.tenant_id.lower(), *self.extra_tenants}
        tenants.update(i["properties"]["tenantId"].lower() for i in self.arm.identities())
        return tenants

    # ------------------------------------------------------------------ first-seen stamps (propagation)

    def _hook_arm(self) -> None:
        hooks = self.arm.request_hooks
        if self._after_arm_request not in hooks:
            hooks.append(self._after_arm_request)

    def _unhook_arm(self) -> None:
        hooks = self.arm.request_hooks
        if self._after_arm_request in hooks:
            hooks.remove(self._after_arm_request)

    def _after_arm_request(self, recorded: RecordedRequest) -> None:
        if recorded.method in ("PUT", "PATCH", "DELETE") and 200 <= recorded.status < 300:
            if _MSI_PATH in recorded.path.lower():
                self._observe()

    @staticmethod
    def _identity_key(identity: dict) -> str:
        return f"mi|{identity['id'].lower()}|{identity['properties']['principalId'].lower()}"

    @staticmethod
    def _fic_key(identity: dict, fic: dict) -> str:
        props = fic["properties"]
        principal = identity["properties"]["principalId"].lower()
        return f"fic|{principal}|{fic['name'].lower()}|{props['issuer']}|{props['subject']}"

    def _observe(self, initial: bool = False) -> None:
        """Stamp what ARM holds with the time it was first seen; forget what is gone."""
        now = -math.inf if initial else self.clock.now()
        current: dict[str, float] = {}
        for identity in self.arm.identities():
            current[self._identity_key(identity)] = _parse_iso((identity.get("systemData") or {}).get("createdAt"))
            for fic in self.arm.federated_credentials(identity["id"]):
                current[self._fic_key(identity, fic)] = _parse_iso((fic.get("systemData") or {}).get("createdAt"))
        with self._lock:
            for key in list(self._seen):
                if key not in current:
                    del self._seen[key]
            for key, created in current.items():
                if created is not None:
                    self._seen[key] = created
                else:
                    self._seen.setdefault(key, now)

    def _age(self, key: str) -> float:
        with self._lock:
            return self.clock.now() - self._seen.get(key, self.clock.now())

    # ------------------------------------------------------------------ HTTP

    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        correlation = request.headers.get("client-request-id") or request.headers.get("x-ms-client-request-id")
        trace = str(uuid.uuid4())
        try:
            response = self._route(request, correlation or str(uuid.uuid4()), trace)
        except Exception as e:  # noqa: BLE001 - an emulator bug: answer as a server error, say what broke
            response = json_response({"error": "server_error", "error_description": f"emulator bug: {e!r}"}, 500)
        response.headers["x-ms-request-id"] = trace
        response.headers["Cache-Control"] = "no-store, no-cache"
        if correlation:
            response.headers["client-request-id"] = correlation
        self.log.add(RecordedRequest.of(request, response.status_code))
        return response(environ, start_response)

    def _route(self, request: Request, correlation: str, trace: str) -> Response:
        parts = [p for p in request.path.split("/") if p]
        try:
            if len(parts) == 3 and parts[0].lower() == "common" and parts[1:] == ["discovery", "instance"]:
                return self._instance_discovery(request)
            if len(parts) == 3 and parts[0].lower() == "common" and parts[1:] == ["discovery", "keys"]:
                return self._get_only(request) or json_response(self.jwks())
            if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                return self._get_only(request) or self._tenant_discovery(request, parts[0])
            if len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
                self._resolve_tenant(parts[0], discovery=True)
                return self._get_only(request) or json_response(self.jwks())
            if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                return self._token(request, parts[0], correlation, trace)
        except _Refusal as r:
            return self._error_response(request, r, correlation, trace)
        body = {
            "error": "not_found",
            "error_description": f"The emulator does not serve {request.method} {request.path}",
        }
        return json_response(body, 404)

    @staticmethod
    def _get_only(request: Request) -> Response | None:
        if request.method != "GET":
            return json_response({"error": "method_not_allowed"}, 405, [("Allow", "GET")])
        return None

    def _error_response(
        self,
        request: Request,
        refusal: _Refusal,
        correlation: str,
        trace: str,
        *,
        refused_client: str | None = None,
        record: bool = False,
    ) -> Response:
        now = self.clock.now()
        body = {
            "error": refusal.error,
            "error_description": f"AADSTS{refusal.code}: {refusal.message} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {_stamp(now)}",
            "error_codes": [refusal.code],
            "timestamp": _stamp(now),
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{request.host_url.rstrip('/')}/error?code={refusal.code}",
        }
        if record:
            with self._lock:
                self.refusals.append((refusal.code, refused_client))
        return json_response(body, refusal.status)

    # ------------------------------------------------------------------ tenants and discovery

    def _resolve_tenant(self, segment: str, *, discovery: bool = False) -> str:
        """The tenant id the path names; refusals as the token endpoint (or discovery) gives them."""
        lowered = segment.lower()
        if lowered in MULTI_TENANT_ALIASES and not discovery:
            raise _Refusal(
                50059,
                "invalid_request",
                "No tenant-identifying information found in either the request or implied by any provided credentials.",
            )
        if lowered in self.known_tenants():
            return lowered
        if lowered in self.verified_domains:
            return self.verified_domains[lowered].lower()
        raise _Refusal(
            90002,
            "invalid_tenant" if discovery else "invalid_request",
            f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there are no "
            "active subscriptions for the tenant.",
        )

    def _tenant_discovery(self, request: Request, segment: str) -> Response:
        base = request.host_url.rstrip("/")
        if segment.lower() in MULTI_TENANT_ALIASES:
            tenant, path_tenant = "{tenantid}", segment
        else:
            tenant = path_tenant = self._resolve_tenant(segment, discovery=True)
        return json_response(
            {
                "token_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{path_tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "idtyp"],
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            }
        )

    def _instance_discovery(self, request: Request) -> Response:
        if (refused := self._get_only(request)) is not None:
            return refused
        endpoint = urllib.parse.urlparse(request.args.get("authorization_endpoint", ""))
        own_host = urllib.parse.urlparse(request.host_url).hostname
        if endpoint.scheme != "https" or endpoint.hostname != own_host:  # MSAL sends the host without its port
            body = {  # code and wording: guess (from memory of Entra's answer to an unknown authority)
                "error": "invalid_instance",
                "error_description": "AADSTS50049: Unknown or invalid instance.",
                "error_codes": [50049],
            }
            return json_response(body, 400)
        tenant = (endpoint.path.strip("/").split("/") or ["common"])[0] or "common"
        host = request.host
        return json_response(
            {
                "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    # ------------------------------------------------------------------ the token endpoint

    def _token(self, request: Request, segment: str, correlation: str, trace: str) -> Response:
        form = request.form if request.mimetype == "application/x-www-form-urlencoded" else {}
        client_id = form.get("client_id") or None
        self._hook_arm()
        self._observe()
        try:
            tenant = self._resolve_tenant(segment)
            claims = self._exchange(request, form, tenant)
        except _Refusal as r:
            return self._error_response(request, r, correlation, trace, refused_client=client_id, record=True)
        with self._lock:
            self.issued.append(claims)
        token = jwt.encode(
            claims,
            self._key.private,
            algorithm="RS256",
            headers={"typ": "JWT", "x5t": self._key.kid, "kid": self._key.kid},
        )
        lifetime = int(claims["exp"] - math.floor(self.clock.now()))
        body = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
        return json_response(body, 200, [("Pragma", "no-cache")])

    def _exchange(self, request: Request, form: Any, tenant: str) -> dict[str, Any]:
        if request.method != "POST":  # code and wording: guess (from memory)
            raise _Refusal(
                900561,
                "invalid_request",
                f"The endpoint only accepts POST requests. Received a {request.method} request.",
            )
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                raise _Refusal(
                    900144, "invalid_request", f"The request body must contain the following parameter: '{name}'."
                )
        if form["grant_type"] != "client_credentials":  # code and wording: guess (from memory)
            raise _Refusal(
                70003, "unsupported_grant_type", f"The app requested an unsupported grant type '{form['grant_type']}'."
            )
        if not form.get("client_assertion"):
            raise _Refusal(
                7000218,
                "invalid_client",
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _Refusal(90011, "invalid_request", "Unexpected client assertion type.")
        client_id = form["client_id"]
        identity = self._find_identity(client_id, tenant)
        header, claims = self._parse_assertion(form["client_assertion"])
        fic = self._match_credential(identity, claims)
        key = self._issuer_key(fic["properties"]["issuer"], header)
        self._verify_signature(form["client_assertion"], header, key)
        self._check_lifetime(claims)
        resource = self._resource(form["scope"], tenant)
        return self._access_token_claims(identity, tenant, resource)

    def _find_identity(self, client_id: str, tenant: str) -> dict:
        for identity in self.arm.identities():
            props = identity["properties"]
            if props["clientId"].lower() == client_id.lower() and props["tenantId"].lower() == tenant:
                if self._age(self._identity_key(identity)) >= self.identity_propagation_seconds:
                    return identity
        raise _Refusal(
            700016,
            "unauthorized_client",
            f"Application with identifier '{client_id}' was not found in the directory '{self.directory_name}'. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You may have sent your authentication request to the wrong "
            "tenant.",
        )

    @staticmethod
    def _parse_assertion(assertion: str) -> tuple[dict, dict]:
        malformed = _Refusal(50027, "invalid_request", "JWT token is invalid or malformed.")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise malformed from e
        if not isinstance(claims.get("iss"), str) or not isinstance(claims.get("sub"), str):
            raise malformed
        if not _audiences(claims.get("aud")) or not isinstance(claims.get("exp"), int | float):
            raise malformed
        return header, claims

    def _match_credential(self, identity: dict, claims: dict) -> dict:
        visible = [
            fic
            for fic in self.arm.federated_credentials(identity["id"])
            if self._age(self._fic_key(identity, fic)) >= self.credential_propagation_seconds
        ]
        issuer, subject, audiences = claims["iss"], claims["sub"], _audiences(claims["aud"])
        by_issuer = [f for f in visible if f["properties"]["issuer"] == issuer]
        by_subject = [f for f in by_issuer if f["properties"]["subject"] == subject]
        matched = [f for f in by_subject if set(f["properties"].get("audiences") or []) & set(audiences)]
        if matched:
            return matched[0]
        if self.legacy_no_match_error:
            raise _Refusal(
                70021,
                "invalid_request",
                f"No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
                f"Assertion Subject: '{subject}'. Assertion Audience: '{audiences[0]}'. {LEGACY_WIF_DOC}",
            )
        code, part, value = (
            (700211, "issuer", issuer)
            if not by_issuer
            else (700213, "subject", subject)
            if not by_subject
            else (700212, "audience", audiences[0])
        )
        raise _Refusal(
            code,
            "invalid_client",
            f"No matching federated identity record found for presented assertion {part} '{value}'. Check your "
            f"federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOC}",
        )

    def _issuer_key(self, issuer: str, header: dict) -> dict:
        """Entra fetches {issuer}.well-known/openid-configuration, then its jwks_uri; here: the IssuerDirectory."""
        discovery = self.directory.discovery(issuer)
        jwks = self.directory.jwks(issuer)
        if (
            not isinstance(discovery, dict)
            or discovery.get("issuer") != issuer  # OIDC Discovery 1.0 §4.3; code for this case: guess
            or not discovery.get("jwks_uri")
            or not isinstance(jwks, dict)
        ):
            raise _Refusal(self.oidc_error_code, "invalid_request", "Request to External OIDC endpoint failed.")
        keys = [k for k in jwks.get("keys") or [] if isinstance(k, dict)]
        kid = header.get("kid")
        candidates = [k for k in keys if k.get("kid") == kid] if kid else keys
        if not candidates:
            raise _Refusal(
                7000272,
                "invalid_client",
                f"The certificate with identifier {kid} used to sign the federated credential could not be found in "
                f"the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata "
                "exposes the key used to sign the incoming token.",
            )
        return candidates[0]

    @staticmethod
    def _verify_signature(assertion: str, header: dict, jwk: dict) -> None:
        alg = header.get("alg")
        try:
            if alg not in _ASYMMETRIC_ALGS:
                raise jwt.InvalidAlgorithmError(str(alg))
            key = jwt.PyJWK(jwk, algorithm=alg).key
            jwt.decode(assertion, key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.PyJWTError as e:
            raise _Refusal(
                700027,
                "invalid_client",
                "Client assertion contains an invalid signature. [Reason - The provided signature value did not "
                f"match the expected signature value., Thumbprint of key used by client: '{header.get('kid')}']",
            ) from e

    def _check_lifetime(self, claims: dict) -> None:
        now, skew = self.clock.now(), self.clock_skew_seconds
        exp = float(claims["exp"])
        nbf = float(claims["nbf"]) if isinstance(claims.get("nbf"), int | float) else None
        if now > exp + skew or (nbf is not None and now < nbf - skew):
            raise _Refusal(
                700024,
                "invalid_client",
                f"Client assertion is not within its valid time range. Current time: {_ticks(now)}, assertion valid "
                f"from {_ticks(nbf if nbf is not None else 0)}, expiry time of assertion {_ticks(exp)}. Review the "
                f"documentation at {CERT_DOC} .",
            )

    def _resource(self, scope: str, tenant: str) -> str:
        scopes = scope.split()
        for s in scopes:
            if not s.endswith(DEFAULT_SCOPE_SUFFIX):
                raise _Refusal(
                    1002012,
                    "invalid_scope",
                    f"The provided value for scope {s} is not valid. Client credential flows must have a scope value "
                    "with /.default suffixed to the resource identifier (application ID URI).",
                )
        resources = list(dict.fromkeys(s[: -len(DEFAULT_SCOPE_SUFFIX)] for s in scopes))
        if len(resources) > 1:  # code and wording: guess (from memory)
            raise _Refusal(
                28000,
                "invalid_scope",
                f"Provided value for the input parameter scope is not valid because it contains more than one "
                f"resource. Scope {scope} is not valid.",
            )
        resource = resources[0]
        if self.known_resources is not None and resource.rstrip("/") not in {
            r.rstrip("/") for r in self.known_resources
        }:
            raise _Refusal(  # code and wording: guess (from memory)
                500011,
                "invalid_resource",
                f"The resource principal named {resource} was not found in the tenant named {self.directory_name}. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You might have sent your authentication request to the "
                "wrong tenant.",
            )
        return resource

    def _access_token_claims(self, identity: dict, tenant: str, resource: str) -> dict[str, Any]:
        now = math.floor(self.clock.now())
        props = identity["properties"]
        tenant = props["tenantId"]  # as the directory spells it, also when the path named a verified domain
        issuer = self.access_token_issuer(tenant)
        return {
            "aud": resource,
            "iss": issuer,
            "iat": now - BACKDATE_SECONDS,
            "nbf": now - BACKDATE_SECONDS,
            "exp": now + int(self.token_lifetime_seconds),
            "aio": _b64url(uuid.uuid4().bytes),
            "appid": props["clientId"],
            "appidacr": "2",
            "idp": issuer,
            "idtyp": "app",
            "oid": props["principalId"],
            "rh": "0." + _b64url(uuid.uuid4().bytes) + ".",
            "sub": props["principalId"],
            "tid": tenant,
            "uti": _b64url(uuid.uuid4().bytes)[:22],
            "ver": "1.0",
            "xms_mirid": identity["id"],
        }
