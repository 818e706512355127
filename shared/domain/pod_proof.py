"""Proof of access inside a private cluster, decided without side effects: the script, and its verdict read.

Why: on a private cluster Keyless reaches the API server only through AKS run command, and a run
command's result (its logs) is stored by AKS and readable by anyone with
`Microsoft.ContainerService/managedClusters/commandResults/read`. Had `kubectl create token` printed the
workload's token there, that token (10 minutes valid, and Entra trades it for the identity) would be
readable too. So the whole proof runs in the run command's pod: the token is made, exchanged at Entra
and used on the data plane there, and only what is not secret is printed: one `keyless-proof` line per
stage (the token's iss/sub/aud/exp decoded in the pod, Entra's HTTP status, `error` and
`error_description`, the data plane's status and error code and message). The command line and the
script (both stored with the command) hold names, URLs and ids only.

Tools: the AKS docs say the run-command pod "provides kubectl and helm", with "jq, xargs, grep, and awk"
for Bash support (MicrosoftDocs azure-aks-docs, articles/aks/access-private-cluster.md). curl is not
listed there: the script checks for it (and jq) first and answers `tools` without making a token when
one is missing; Keyless then reports the proof as not possible in the cluster and never falls back to
bringing the token out. The token reaches curl on its standard input (`--data-urlencode
client_assertion@-`), Entra's token reaches curl as a header read from standard input (`-H @-`): neither
is on a command line (visible in /proc) nor printed; Entra's answer is kept in a file of the pod's
working directory (umask 077) and removed once read.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex

from shared.domain import kubectl
from shared.domain.access_proof import DataPlaneAnswer, EntraRefusal, TokenClaims, scrub

SCRIPT_FILE = "keyless-access-proof.sh"
MODELS_API_VERSION = "2024-10-21"
"""As shared.adapters.access_probe.OPENAI_API_VERSION: `GET /openai/models`, GA."""
PREFIX = "keyless-proof"

# One statement a line (the run-command emulator, tests/emulators/kubectl.py, runs exactly these shapes).
SCRIPT = """\
# Keyless proof of access, run in the cluster: the service account's token is made, exchanged at Entra and
# used on the OpenAI data plane here; it is never printed. Only `keyless-proof` lines leave the pod.
# Arguments: namespace, service account, audience, duration, Entra token URL, client id, scope, models URL.
set -u
umask 077
command -v curl >/dev/null || { echo "keyless-proof tools curl"; exit 0; }
command -v jq >/dev/null || { echo "keyless-proof tools jq"; exit 0; }
token=$(kubectl create token "$2" -n "$1" --audience "$3" --duration "$4" 2>token.err) || { echo "keyless-proof token $(jq -Rsc . token.err)"; exit 0; }
echo "keyless-proof claims $(printf '%s' "$token" | jq -Rc 'split(".")[1] | gsub("-";"+") | gsub("_";"/") | . + ("=" * ((4 - length % 4) % 4)) | @base64d | fromjson | {iss, sub, aud, exp}' 2>/dev/null)"
status=$(printf '%s' "$token" | curl -sS -o entra.json -w '%{http_code}' --data-urlencode client_assertion@- --data-urlencode client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$6" --data-urlencode "scope=$7" "$5" 2>/dev/null)
token=
echo "keyless-proof entra $status $(jq -c '{error, error_description}' entra.json 2>/dev/null)"
[ "$status" = 200 ] && [ -n "$8" ] || { rm -f entra.json; exit 0; }
status=$(jq -r '"Authorization: Bearer " + .access_token' entra.json | curl -sS -o read.json -w '%{http_code}' -H @- -H 'Accept: application/json' "$8" 2>/dev/null)
rm -f entra.json
echo "keyless-proof data-plane $status $(jq -c '{code: (.error.code? // .statusCode), message: (.error.message? // .message)}' read.json 2>/dev/null)"
rm -f read.json
"""  # noqa: E501 - one statement a line, as the script runs


def token_url(authority_host: str, tenant_id: str) -> str:
    """Entra's token endpoint for the tenant, as azure-identity's ClientAssertionCredential posts to it."""
    host = authority_host if "://" in authority_host else f"https://{authority_host}"
    return f"{host.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"


def models_url(endpoint: str | None) -> str:
    """The data-plane read (the account's models); '' when the account has no endpoint to read."""
    if not endpoint:
        return ""
    base = endpoint if endpoint.endswith("/") else endpoint + "/"
    return f"{base}openai/models?api-version={MODELS_API_VERSION}"


def command(
    namespace: str,
    service_account: str,
    audience: str,
    seconds: int,
    entra_token_url: str,
    client_id: str,
    scope: str,
    read_url: str,
) -> str:
    """The run command: the script (in the command's context) with its arguments, each quoted. No secret."""
    args = [namespace, service_account, audience, f"{int(seconds)}s", entra_token_url, client_id, scope, read_url]
    return f"bash {SCRIPT_FILE} " + " ".join(shlex.quote(a) for a in args)


@dataclasses.dataclass(frozen=True)
class PodVerdict:
    """What the pod printed, stage by stage; None for a stage it did not reach."""

    missing_tool: str | None = None
    token_error: str | None = None  # kubectl's error (its error lines only)
    token_temporary: bool = False
    claims: TokenClaims | None = None
    refusal: EntraRefusal | None = None  # None: Entra gave a token (or the exchange was not reached)
    exchanged: bool = False
    answer: DataPlaneAnswer | None = None


_LINE = re.compile(rf"^{PREFIX} (tools|token|claims|entra|data-plane)(?: (.*))?$")
_AADSTS = re.compile(r"\bAADSTS\d{5,7}\b")


def parse_verdict(logs: str) -> PodVerdict:
    """The pod's `keyless-proof` lines read into a verdict. Raises ValueError (naming no part of the logs)
    when they are not what the script prints."""
    found: dict[str, str] = {}
    for line in logs.splitlines():
        match = _LINE.match(line.strip())
        if match:
            if match.group(1) in found:
                raise ValueError(f"the proof script printed stage {match.group(1)} twice")
            found[match.group(1)] = match.group(2) or ""
    if "tools" in found:
        return PodVerdict(missing_tool=found["tools"].strip()[:20] or "?")
    if "token" in found:
        return _token_failed(found["token"])
    if "claims" not in found:
        raise ValueError("the proof script printed no verdict")
    claims = _claims(found["claims"])
    if "entra" not in found:
        raise ValueError("the proof script printed no answer from Entra")
    status, refusal = _entra(found["entra"])
    if refusal is not None:
        return PodVerdict(claims=claims, refusal=refusal)
    answer = _data_plane(found["data-plane"]) if "data-plane" in found else None
    return PodVerdict(claims=claims, exchanged=status == 200, answer=answer)


def _token_failed(text: str) -> PodVerdict:
    try:
        said = json.loads(text)
    except ValueError:
        said = ""
    lines = kubectl.error_lines(said if isinstance(said, str) else "")
    message = scrub(" | ".join(lines)[-300:]) or "kubectl create token failed"
    failure = kubectl.judge("succeeded", 1, "", "\n".join(lines))
    return PodVerdict(token_error=message, token_temporary=bool(failure and failure.temporary))


def _claims(text: str) -> TokenClaims | None:
    """iss/sub/aud/exp as jq decoded them in the pod; None when the token was not a JWT."""
    import datetime as dt

    try:
        claims = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    audiences = claims.get("aud") or []
    exp = claims.get("exp")
    expires = (
        dt.datetime.fromtimestamp(exp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if isinstance(exp, int | float) and not isinstance(exp, bool)
        else ""
    )
    return TokenClaims(
        issuer=str(claims.get("iss") or ""),
        subject=str(claims.get("sub") or ""),
        audiences=tuple(str(a) for a in ([audiences] if isinstance(audiences, str) else audiences)),
        expires_at=expires,
    )


def _status(word: str) -> int | None:
    """curl's `%{http_code}`: 000 (or nothing) when no answer came."""
    return int(word) if word.isdigit() and int(word) > 0 else None


def _entra(text: str) -> tuple[int | None, EntraRefusal | None]:
    word, _, body = text.partition(" ")
    status = _status(word)
    if status == 200:
        return status, None
    if status is None:
        return None, EntraRefusal("", None, "Entra did not answer")
    try:
        said = json.loads(body) if body.strip() else {}
    except ValueError:
        said = {}
    description = str((said or {}).get("error_description") or "") if isinstance(said, dict) else ""
    found = _AADSTS.search(description)
    first = description[found.start() :].split(". ", 1)[0].split("\n", 1)[0][:200] if found else ""
    return status, EntraRefusal(found.group(0) if found else "", status, scrub(first))


def _data_plane(text: str) -> DataPlaneAnswer:
    word, _, body = text.partition(" ")
    status = _status(word)
    if status is None:
        return DataPlaneAnswer(503, "Unreachable", "the endpoint did not answer")
    if 200 <= status < 300:
        return DataPlaneAnswer(status)
    try:
        said = json.loads(body) if body.strip() else {}
    except ValueError:
        said = {}
    said = said if isinstance(said, dict) else {}
    return DataPlaneAnswer(status, scrub(str(said.get("code") or ""))[:64], scrub(str(said.get("message") or ""))[:300])
