"""Who is calling: the App Service Authentication principal, parsed strictly. Pure.

Behind App Service Authentication (Entra ID) the platform strips any client-sent
X-MS-CLIENT-PRINCIPAL and sets its own: base64 of
`{"auth_typ": ..., "claims": [{"typ": ..., "val": ...}], "name_typ": ..., "role_typ": ...}`.
We take the object id, groups, app roles and app id from it, and refuse anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re

from shared.domain.errors import PermanentError

HEADER = "X-MS-CLIENT-PRINCIPAL"
MAX_HEADER_BYTES = 16 * 1024
MAX_CLAIMS = 1000
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
OID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
GROUP_CLAIMS = ("groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups")
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
APPID_CLAIMS = ("appid", "azp")
NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")


class PrincipalError(PermanentError):
    """The principal header is missing or cannot be trusted (maps to 401)."""


@dataclasses.dataclass(frozen=True)
class Caller:
    object_id: str
    name: str = ""
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    app_id: str = ""

    @property
    def audit(self) -> str:
        """What the ledger records as `requestedBy`: the object id (and a display name)."""
        return f"{self.object_id} ({self.name})" if self.name else self.object_id


def parse_principal(header: str | None) -> Caller:
    """The caller from an X-MS-CLIENT-PRINCIPAL value; PrincipalError naming what is wrong."""
    if not header:
        raise PrincipalError(f"{HEADER}: missing; sign in through App Service Authentication (Entra ID)")
    if len(header) > MAX_HEADER_BYTES:
        raise PrincipalError(f"{HEADER}: larger than {MAX_HEADER_BYTES} bytes")
    try:
        raw = base64.b64decode(header.strip(), validate=True)
        doc = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise PrincipalError(f"{HEADER}: not base64-encoded JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise PrincipalError(f"{HEADER}: no claims list")
    claims: dict[str, list[str]] = {}
    if len(doc["claims"]) > MAX_CLAIMS:
        raise PrincipalError(f"{HEADER}: more than {MAX_CLAIMS} claims")
    for claim in doc["claims"]:
        if (
            not isinstance(claim, dict)
            or not isinstance(claim.get("typ"), str)
            or not isinstance(claim.get("val"), str)
        ):
            raise PrincipalError(f"{HEADER}: every claim needs string typ and val")
        claims.setdefault(claim["typ"], []).append(claim["val"])
    return caller_from_claims(claims)


def caller_from_claims(claims: dict[str, list[str]]) -> Caller:
    def first(names: tuple[str, ...]) -> str:
        for n in names:
            if claims.get(n):
                return claims[n][0]
        return ""

    def every(names: tuple[str, ...]) -> frozenset[str]:
        return frozenset(v for n in names for v in claims.get(n, []))

    oids = {v for n in OID_CLAIMS for v in claims.get(n, [])}
    if len(oids) != 1:
        raise PrincipalError(f"{HEADER}: needs exactly one object id (oid) claim")
    oid = next(iter(oids))
    if not _GUID.fullmatch(oid):
        raise PrincipalError(f"{HEADER}: the oid claim is not a GUID")
    return Caller(
        object_id=oid.lower(),
        name=first(NAME_CLAIMS)[:256],
        groups=frozenset(g.lower() for g in every(GROUP_CLAIMS)),
        roles=every(ROLE_CLAIMS),
        app_id=first(APPID_CLAIMS)[:64],
    )


def dev_caller(value: str) -> Caller:
    """KEYLESS_DEV_PRINCIPAL: an object id, or JSON {"oid", "groups", "roles", "name"} (local runs only)."""
    value = value.strip()
    if value.startswith("{"):
        try:
            doc = json.loads(value)
        except ValueError:
            raise PrincipalError("KEYLESS_DEV_PRINCIPAL: not JSON") from None
        if not isinstance(doc, dict):
            raise PrincipalError("KEYLESS_DEV_PRINCIPAL: not a JSON object")
        claims: dict[str, list[str]] = {"oid": [str(doc.get("oid", ""))]}
        claims["groups"] = [str(g) for g in doc.get("groups", []) if isinstance(g, str)]
        claims["roles"] = [str(r) for r in doc.get("roles", []) if isinstance(r, str)]
        claims["name"] = [str(doc.get("name", "developer"))]
        return caller_from_claims(claims)
    return caller_from_claims({"oid": [value], "name": ["developer"]})
