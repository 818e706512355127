"""The run-command pod's bash, for one script: Keyless's in-cluster proof of access, line by line.

Why: on a private cluster Keyless proves access inside the AKS run-command pod (shared.domain.pod_proof):
`bash keyless-access-proof.sh ARGS...` with the script in the command's context. This runs that script as
the pod would, statement by statement, each a shape this module knows exactly (any other line, command
or file is refused as bash would fail: a message and a non-zero exit, never silently accepted):

- `kubectl create token ...` goes to the Kubernetes emulator through KubectlPod (real HTTPS, the
  command's credential); its stderr to the named file, its stdout (the token) into a shell variable;
- `curl -sS -o FILE -w '%{http_code}' ...` makes the one HTTPS request the script asks (Entra's form POST
  with `--data-urlencode`, `client_assertion@-` read from the pipe; the data-plane GET with `-H @-`
  read from the pipe), trusting the test CA as the pod trusts the public CAs; `000` when no answer;
- the five `jq` programs the script uses, computed here as jq computes them (output `-c`: compact);
- `command -v TOOL` answers from `tools` (what the image ships: kubectl, helm, jq, xargs, grep, awk
  as the AKS docs list them, and curl unless a test takes it away).

What the pod prints is the script's `echo` lines only; the token and Entra's token stay in variables
and files of this run, which end with it.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

DOCUMENTED_TOOLS = frozenset({"bash", "kubectl", "helm", "jq", "xargs", "grep", "awk"})
"""What learn.microsoft.com/azure/aks/access-private-cluster says the run-command pod has."""
DEFAULT_TOOLS = DOCUMENTED_TOOLS | {"curl"}

CLAIMS_JQ = (
    'split(".")[1] | gsub("-";"+") | gsub("_";"/") | . + ("=" * ((4 - length % 4) % 4)) | @base64d | fromjson '
    "| {iss, sub, aud, exp}"
)
ENTRA_JQ = "{error, error_description}"
HEADER_JQ = '"Authorization: Bearer " + .access_token'
READ_JQ = "{code: (.error.code? // .statusCode), message: (.error.message? // .message)}"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_TOKEN = (
    'token=$(kubectl create token "$2" -n "$1" --audience "$3" --duration "$4" 2>token.err) '
    '|| { echo "keyless-proof token $(jq -Rsc . token.err)"; exit 0; }'
)
_CLAIMS = f"echo \"keyless-proof claims $(printf '%s' \"$token\" | jq -Rc '{CLAIMS_JQ}' 2>/dev/null)\""
_EXCHANGE = (
    "status=$(printf '%s' \"$token\" | curl -sS -o entra.json -w '%{http_code}' "
    f"--data-urlencode client_assertion@- --data-urlencode client_assertion_type={JWT_BEARER} "
    '--data-urlencode grant_type=client_credentials --data-urlencode "client_id=$6" --data-urlencode "scope=$7" '
    '"$5" 2>/dev/null)'
)
_ENTRA = f"echo \"keyless-proof entra $status $(jq -c '{ENTRA_JQ}' entra.json 2>/dev/null)\""
_GO_ON = '[ "$status" = 200 ] && [ -n "$8" ] || { rm -f entra.json; exit 0; }'
_READ = (
    f"status=$(jq -r '{HEADER_JQ}' entra.json | curl -sS -o read.json -w '%{{http_code}}' -H @- "
    "-H 'Accept: application/json' \"$8\" 2>/dev/null)"
)
_READ_ECHO = f"echo \"keyless-proof data-plane $status $(jq -c '{READ_JQ}' read.json 2>/dev/null)\""
_NEED = re.compile(r'^command -v ([a-z]+) >/dev/null \|\| \{ echo "keyless-proof tools \1"; exit 0; \}$')


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _jq_file(files: dict[str, bytes], name: str, program: Callable[[Any], Any]) -> str:
    """`jq -c PROGRAM FILE 2>/dev/null`: '' when the file is missing, not JSON, or the program errs."""
    if name not in files:
        return ""
    try:
        result = program(json.loads(files[name]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return ""
    return "" if result is None else _compact(result)


def _claims(token: str) -> str:
    """CLAIMS_JQ on the token (jq -R: the raw string)."""
    parts = token.split(".")
    if len(parts) < 2:
        return ""  # null | gsub: an error
    segment = parts[1].replace("-", "+").replace("_", "/")
    segment += "=" * ((4 - len(segment) % 4) % 4)
    try:
        claims = json.loads(base64.b64decode(segment))
    except ValueError:
        return ""
    if not isinstance(claims, dict):
        return ""
    return _compact({k: claims.get(k) for k in ("iss", "sub", "aud", "exp")})


def _entra_fields(body: Any) -> Any:
    if not isinstance(body, dict):
        raise TypeError("not an object")
    return {"error": body.get("error"), "error_description": body.get("error_description")}


def _read_fields(body: Any) -> Any:
    if not isinstance(body, dict):
        raise TypeError("not an object")
    error = body.get("error")

    def pick(field: str, fallback: str) -> Any:
        inner = error.get(field) if isinstance(error, dict) else None
        return inner if inner not in (None, False) else body.get(fallback)

    return {"code": pick("code", "statusCode"), "message": pick("message", "message")}


class ProofShell:
    """Runs the proof script. `kubectl(command) -> (exit code, output)` is the pod's kubectl."""

    def __init__(self, kubectl: Callable[[str], tuple[int, str]], ca_pem: bytes, tools: frozenset[str]) -> None:
        self._kubectl = kubectl
        self._ssl = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl.create_default_context()
        self._tools = tools

    def run(self, words: list[str], files: dict[str, bytes]) -> tuple[int, str]:
        if "bash" not in self._tools:
            return 127, f"/bin/sh: {words[0]}: not found\n"
        if len(words) < 2 or words[1] not in files:
            name = words[1] if len(words) > 1 else ""
            return 127, f"bash: {name}: No such file or directory\n"
        self._args, self._files = words[2:], dict(files)
        self._vars: dict[str, str] = {}
        self._out: list[str] = []
        try:
            for number, line in enumerate(files[words[1]].decode().splitlines(), 1):
                self._statement(words[1], number, line.strip())
        except _Exit as e:
            return e.code, "".join(self._out)
        return 0, "".join(self._out)

    def _arg(self, n: int) -> str:
        if n > len(self._args):
            self._out.append(f"bash: ${n}: unbound variable\n")  # set -u
            raise _Exit(1)
        return self._args[n - 1]

    def _statement(self, script: str, number: int, line: str) -> None:
        if not line or line.startswith("#") or line in ("set -u", "umask 077"):
            return
        need = _NEED.match(line)
        if need:
            if need.group(1) not in self._tools:
                self._out.append(f"keyless-proof tools {need.group(1)}\n")
                raise _Exit(0)
            return
        if line == _TOKEN:
            command = "kubectl create token " + " ".join(
                shlex.quote(a)
                for a in (
                    self._arg(2),
                    "-n",
                    self._arg(1),
                    "--audience",
                    self._arg(3),
                    "--duration",
                    self._arg(4),
                )  # fmt: skip
            )
            code, output = self._kubectl(command)
            if code != 0:
                self._files["token.err"] = output.encode()
                self._out.append(f"keyless-proof token {_compact(output)}\n")
                raise _Exit(0)
            self._vars["token"] = output.rstrip("\n")  # $(...) drops trailing newlines
        elif line == _CLAIMS:
            self._out.append(f"keyless-proof claims {_claims(self._vars['token'])}\n")
        elif line == _EXCHANGE:
            form = [
                ("client_assertion", self._vars["token"]),
                ("client_assertion_type", JWT_BEARER),
                ("grant_type", "client_credentials"),
                ("client_id", self._arg(6)),
                ("scope", self._arg(7)),
            ]  # in the order curl joins its --data-urlencode parts
            body = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            self._vars["status"] = self._curl("POST", self._arg(5), headers, body, "entra.json")
        elif line == "token=":
            self._vars["token"] = ""
        elif line == _ENTRA:
            said = _jq_file(self._files, "entra.json", _entra_fields)
            self._out.append(f"keyless-proof entra {self._vars['status']} {said}\n")
        elif line == _GO_ON:
            if not (self._vars["status"] == "200" and self._arg(8)):
                self._files.pop("entra.json", None)
                raise _Exit(0)
        elif line == _READ:
            headers = {"Accept": "application/json"}
            try:
                token = json.loads(self._files["entra.json"])["access_token"]
                headers["Authorization"] = f"Bearer {token}" if isinstance(token, str) else ""
            except (KeyError, ValueError, TypeError):
                pass  # jq failed: curl reads no header from the pipe
            headers = {k: v for k, v in headers.items() if v}
            self._vars["status"] = self._curl("GET", self._arg(8), headers, None, "read.json")
        elif line in ("rm -f entra.json", "rm -f read.json"):
            self._files.pop(line.rsplit(" ", 1)[1], None)
        elif line == _READ_ECHO:
            said = _jq_file(self._files, "read.json", _read_fields)
            self._out.append(f"keyless-proof data-plane {self._vars['status']} {said}\n")
        else:
            self._out.append(f"{script}: line {number}: the run-command emulator does not run this statement\n")
            raise _Exit(2)

    def _curl(self, method: str, url: str, headers: dict[str, str], body: bytes | None, output: str) -> str:
        """One request as curl -sS -o OUTPUT -w '%{http_code}' makes it; the status printed ('000': none)."""
        if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
            return "000"
        request = urllib.request.Request(url, data=body, method=method, headers={"User-Agent": "curl/8.5.0",
                                                                                 **headers})  # fmt: skip
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=30) as response:
                self._files[output] = response.read()
                return f"{response.status:03d}"
        except urllib.error.HTTPError as e:
            self._files[output] = e.read()
            return f"{e.code:03d}"
        except (urllib.error.URLError, OSError):
            return "000"
