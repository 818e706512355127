"""The pod that AKS run command starts: a strict kubectl subset talking HTTPS to an API server.

Why: `managedClusters/runCommand` (what `az aks command invoke` uses) runs the caller's command in
a pod inside the cluster, with the files of the request's `context` (a base64 zip) in its working
directory, and returns exit code and logs. The ARM emulator hands the command here; this module runs
it the way kubectl would against the linked Kubernetes emulator, over real HTTPS with the caller's
token, so what Keyless writes through run command lands with the same field ownership as a direct
write, and every error the API server gives comes back as kubectl prints it (exit 1, the message
in the logs).

Served: `kubectl get` (named objects or a resource type, `-l`, `--ignore-not-found`),
`kubectl apply --server-side` (`--force-conflicts`, `--field-manager`, `-f FILE`),
`kubectl patch --type json --patch-file FILE`, `kubectl delete --ignore-not-found`, each with
`-n`, `-o json|name` and `--show-managed-fields`. Anything else (another program, a shell operator,
an unknown flag, client-side apply) fails as a shell or kubectl would: logs and a non-zero exit;
never silently accepted. Output is as kubectl prints it: one object alone, several in a `List`,
managedFields stripped unless asked for.

Also `kubectl create token SA [-n NS] [--audience AUD]... [--duration D] [--bound-object-kind Pod|Secret
--bound-object-name NAME [--bound-object-uid UID]] [-o json|name]`, as kubernetes
staging/src/k8s.io/kubectl/pkg/cmd/create/create_token.go does it: only those flags (anything else is
pflag's "unknown flag"); `--duration` parsed as a Go duration (time.ParseDuration: `600s`, `10m`, `1h30m`,
`1.5h`; its error messages), 0 or unset leaving the lifetime to the server; its client-side checks with
their messages (exactly one NAME, `--duration` not negative and whole seconds, no empty `--audience`, the
bound-object flag rules); then one TokenRequest POSTed to the `token` subresource with the body client-go
sends, and the token printed alone, without a newline (stdout is not a terminal in the pod), exit 0. An
API error is printed as `error: failed to create token: <the Status message>` (cmdutil.CheckErr on an
unwrapped error), exit 1.

And `bash SCRIPT ARGS...` for one script, Keyless's in-cluster proof of access (tests/emulators/runtime_shell.py:
each of its statements run as the pod's bash, kubectl, curl and jq would).
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import shlex
import ssl
import urllib.error
import urllib.parse
import urllib.request

import yaml

from tests.emulators.kube import RESOURCES, ResourceType
from tests.emulators.runtime_shell import DEFAULT_TOOLS, ProofShell

_BY_NAME: dict[str, ResourceType] = {}
for _rt in RESOURCES.values():
    for _name in (_rt.kind.lower(), _rt.plural, *_rt.short_names, f"{_rt.plural}.{_rt.group}" if _rt.group else ""):
        if _name:
            _BY_NAME[_name] = _rt
_SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "$(", "`"}
_VALUE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "-o": "output", "--output": "output",
                "-l": "selector", "--selector": "selector", "-f": "filename", "--filename": "filename",
                "--field-manager": "field_manager", "--type": "patch_type", "--patch-file": "patch_file",
                "-p": "patch", "--patch": "patch"}  # fmt: skip
_BOOL_FLAGS = {"--ignore-not-found": "ignore_not_found", "--show-managed-fields": "show_managed_fields",
               "--server-side": "server_side", "--force-conflicts": "force_conflicts", "-A": "all_namespaces",
               "--all-namespaces": "all_namespaces"}  # fmt: skip
_TOKEN_VALUE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "-o": "output", "--output": "output",
                      "--audience": "audiences", "--duration": "duration", "--bound-object-kind": "bound_object_kind",
                      "--bound-object-name": "bound_object_name", "--bound-object-uid": "bound_object_uid"}  # fmt: skip
_BOUND_OBJECT_KINDS = {"Pod": "v1", "Secret": "v1"}  # create_token.go boundObjectKindToAPIVersions (no Node: env)
_GO_DURATION_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9,
                      "m": 60 * 10**9, "h": 3600 * 10**9}  # fmt: skip
_SECOND_NS = 10**9


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds; ValueError with Go's message when it does not parse."""
    quoted = json.dumps(text, ensure_ascii=False)
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total = decimal.Decimal(0)
    while rest:
        number = ""
        while rest and (rest[0].isascii() and rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        whole, _, fraction = number.partition(".")
        if not (whole or fraction) or number.count(".") > 1:
            raise ValueError(f"time: invalid duration {quoted}")
        unit = ""
        while rest and rest[0] != "." and not (rest[0].isascii() and rest[0].isdigit()):
            unit, rest = unit + rest[0], rest[1:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _GO_DURATION_UNITS:
            raise ValueError(f"time: unknown unit {json.dumps(unit, ensure_ascii=False)} in duration {quoted}")
        total += decimal.Decimal(f"{whole or 0}.{fraction or 0}") * _GO_DURATION_UNITS[unit]
    if total > 2**63 - 1:
        raise ValueError(f"time: invalid duration {quoted}")
    return -int(total) if negative else int(total)


def _printed_kind(rt: ResourceType) -> str:
    """How kubectl names a kind in `-o name` output: `serviceaccount`, `deployment.apps`."""
    return f"{rt.kind.lower()}.{rt.group}" if rt.group else rt.kind.lower()


@dataclasses.dataclass
class CommandResult:
    exit_code: int
    logs: str


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class _Args:
    verb: str
    positional: list[str]
    namespace: str = "default"
    output: str = ""
    selector: str = ""
    filename: str = ""
    field_manager: str = ""
    patch_type: str = "strategic"
    patch_file: str = ""
    patch: str = ""
    ignore_not_found: bool = False
    show_managed_fields: bool = False
    server_side: bool = False
    force_conflicts: bool = False
    all_namespaces: bool = False  # -A: a list across namespaces (kubectl ignores -n then)
    audiences: list[str] = dataclasses.field(default_factory=list)  # create token: --audience, repeatable
    duration: str = ""
    bound_object_kind: str = ""
    bound_object_name: str = ""
    bound_object_uid: str = ""


class KubectlPod:
    """Runs one command against `server_url` as the holder of `token` (None: no credentials)."""

    def __init__(
        self, server_url: str, ca_pem: bytes, token: str | None, tools: frozenset[str] = DEFAULT_TOOLS
    ) -> None:
        self._server = server_url.rstrip("/")
        self._token = token
        self._ca_pem = ca_pem
        self._tools = tools
        self._ssl = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl.create_default_context()

    def run(self, command: str, files: dict[str, bytes]) -> CommandResult:
        if command.startswith("bash "):  # a script from the context: only Keyless's proof script is run
            try:
                words = shlex.split(command, posix=True)
            except ValueError as e:
                return CommandResult(2, f"/bin/sh: syntax error: {e}\n")
            if any(w in _SHELL_OPERATORS or w.startswith(("$(", "`")) for w in words):
                return CommandResult(
                    1, f"the run-command emulator runs one script, not a shell pipeline: {command!r}\n"
                )
            shell = ProofShell(self._kubectl, self._ca_pem, self._tools)
            return CommandResult(*shell.run(words, files))
        return self._run_kubectl(command, files)

    def _kubectl(self, command: str) -> tuple[int, str]:
        result = self._run_kubectl(command, {})
        return result.exit_code, result.logs

    def _run_kubectl(self, command: str, files: dict[str, bytes]) -> CommandResult:
        out: list[str] = []
        try:
            args = self._parse(command)
            handler = {"get": self._get, "apply": self._apply, "patch": self._patch, "delete": self._delete,
                       "create token": self._create_token}  # fmt: skip
            handler[args.verb](args, files, out)
            return CommandResult(0, "".join(out))
        except _Exit as e:
            return CommandResult(e.code, "".join(out) + e.message + "\n")

    # ------------------------------------------------------------------ command line

    @staticmethod
    def _parse(command: str) -> _Args:
        try:
            words = shlex.split(command, posix=True)
        except ValueError as e:
            raise _Exit(2, f"/bin/sh: syntax error: {e}") from None
        if not words:
            raise _Exit(1, "error: the command is empty")
        if any(w in _SHELL_OPERATORS or w.startswith(("$(", "`")) for w in words):
            raise _Exit(1, f"the run-command emulator runs one kubectl command, not a shell pipeline: {command!r}")
        if words[0] != "kubectl":
            raise _Exit(127, f"/bin/sh: {words[0]}: not found")
        if len(words) < 2 or words[1] not in ("get", "apply", "patch", "delete", "create"):
            verb = words[1] if len(words) > 1 else ""
            raise _Exit(1, f'error: unknown command "{verb}" for "kubectl" (not served by the emulator)')
        value_flags, bool_flags = _VALUE_FLAGS, _BOOL_FLAGS
        args, rest = _Args(words[1], []), words[2:]
        if words[1] == "create":
            if len(words) < 3 or words[2] != "token":
                raise _Exit(1, 'error: the run-command emulator serves only "kubectl create token" of kubectl create')
            value_flags, bool_flags = _TOKEN_VALUE_FLAGS, {}
            args, rest = _Args("create token", []), words[3:]
        i = 0
        while i < len(rest):
            word = rest[i]
            flag, eq, value = word.partition("=")
            if flag in value_flags:
                if not eq:
                    i += 1
                    if i >= len(rest):
                        raise _Exit(1, f"error: flag needs an argument: {flag}")
                    value = rest[i]
                if flag == "--audience":
                    args.audiences.append(value)
                else:
                    setattr(args, value_flags[flag], value)
            elif flag in bool_flags:
                setattr(args, bool_flags[flag], (value or "true") == "true")
            elif word.startswith("-"):
                unknown = (
                    f"unknown shorthand flag: '{flag[1]}' in {flag}" if flag[1:2] != "-" else f"unknown flag: {flag}"
                )
                raise _Exit(1, f"error: {unknown}\nSee 'kubectl {args.verb} --help' for usage.")
            else:
                args.positional.append(word)
            i += 1
        if args.duration:
            try:
                parse_go_duration(args.duration)
            except ValueError as e:
                raise _Exit(1, f'error: invalid argument "{args.duration}" for "--duration" flag: {e}\n'
                               f"See 'kubectl {args.verb} --help' for usage.") from None  # fmt: skip
        if args.output not in ("", "json", "name"):
            raise _Exit(1, f'error: unable to match a printer suitable for the output format "{args.output}"')
        return args

    @staticmethod
    def _resource(name: str) -> ResourceType:
        rt = _BY_NAME.get(name.lower())
        if rt is None:
            raise _Exit(1, f'error: the server doesn\'t have a resource type "{name}"')
        return rt

    def _refs(self, positional: list[str]) -> list[tuple[ResourceType, str]]:
        refs = []
        for word in positional:
            kind, slash, name = word.partition("/")
            if not slash or not name:
                raise _Exit(1, f'error: there is no need to specify a resource type as a separate argument "{word}"')
            refs.append((self._resource(kind), name))
        return refs

    # ------------------------------------------------------------------ HTTP

    def _url(self, rt: ResourceType, namespace: str | None, name: str = "", query: dict[str, str] | None = None) -> str:
        path = rt.prefix + (f"/namespaces/{namespace}" if rt.namespaced and namespace else "") + f"/{rt.plural}"
        if name:
            path += f"/{urllib.parse.quote(name)}"
        return self._server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def _call(self, method: str, url: str, body: bytes | None = None, content_type: str = "") -> tuple[int, dict]:
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", "kubectl/v1.31.5 (linux/amd64) kubernetes/aks-run-command")
        if content_type:
            request.add_header("Content-Type", content_type)
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                status = json.loads(raw)
            except ValueError:
                status = {"message": raw.decode(errors="replace"), "reason": e.reason}
            return e.code, status
        except (urllib.error.URLError, OSError) as e:
            host = urllib.parse.urlsplit(self._server).netloc
            raise _Exit(1, f"The connection to the server {host} was refused - did you specify the right host or "
                           f"port? ({e})") from None  # fmt: skip

    def _check(self, status: int, body: dict) -> None:
        if status < 400:
            return
        if status == 401:
            raise _Exit(1, "error: You must be logged in to the server (Unauthorized)")
        reason = body.get("reason") or "Unknown"
        raise _Exit(1, f"Error from server ({reason}): {body.get('message', '')}")

    # ------------------------------------------------------------------ printing

    def _print(self, args: _Args, objects: list[dict], out: list[str], single: bool, action: str = "") -> None:
        """`-o json`, `-o name`, or kubectl's default: `kind/name <action>` for writes, a NAME table for get."""
        names = [f"{_printed_kind(RESOURCES[o['kind']])}/{o['metadata']['name']}" for o in objects]
        if args.output == "name" or (args.output == "" and action):
            out.extend(f"{n} {action}\n" if args.output == "" else f"{n}\n" for n in names)
            return
        if args.output == "":
            out.append("NAME\n" + "".join(f"{n}\n" for n in names))
            return
        shown = [self._shown(o, args.show_managed_fields) for o in objects]
        if single and len(shown) == 1:
            out.append(json.dumps(shown[0], indent=4) + "\n")
        else:
            listing = {"apiVersion": "v1", "items": shown, "kind": "List", "metadata": {"resourceVersion": ""}}
            out.append(json.dumps(listing, indent=4) + "\n")

    @staticmethod
    def _shown(obj: dict, managed_fields: bool) -> dict:
        if not managed_fields and "managedFields" in obj.get("metadata", {}):
            obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}
        return obj

    # ------------------------------------------------------------------ verbs

    def _get(self, args: _Args, files: dict[str, bytes], out: list[str]) -> None:
        if not args.positional:
            raise _Exit(1, "error: you must specify the type of resource to get.")
        if "/" not in args.positional[0]:
            if len(args.positional) > 1:
                raise _Exit(1, "error: the run-command emulator lists resource types without names")
            types = [self._resource(name) for name in args.positional[0].split(",")]
            query = {"labelSelector": args.selector} if args.selector else None
            items = []
            for rt in types:  # kubectl lists each type in turn and prints them as one List
                namespace = None if args.all_namespaces else args.namespace
                status, body = self._call("GET", self._url(rt, namespace, query=query))
                self._check(status, body)
                items += [{"apiVersion": rt.api_version, "kind": rt.kind, **i} for i in body.get("items", [])]
            self._print(args, items, out, single=False)
            return
        found = []
        for rt, name in self._refs(args.positional):
            status, body = self._call("GET", self._url(rt, args.namespace, name))
            if status == 404 and args.ignore_not_found:
                continue
            self._check(status, body)
            found.append(body)
        if found:
            self._print(args, found, out, single=len(args.positional) == 1)

    def _apply(self, args: _Args, files: dict[str, bytes], out: list[str]) -> None:
        if not args.server_side:
            raise _Exit(1, "error: the run-command emulator serves only server-side apply (--server-side)")
        if not args.filename:
            raise _Exit(1, "error: must specify one of -f and -k")
        if args.filename not in files:
            raise _Exit(1, f'error: the path "{args.filename}" does not exist')
        try:
            documents = [d for d in yaml.safe_load_all(files[args.filename]) if d]
        except yaml.YAMLError as e:
            raise _Exit(1, f"error: error parsing {args.filename}: {e}") from None
        query = {"fieldManager": args.field_manager or "kubectl"}
        if args.force_conflicts:
            query["force"] = "true"
        applied = []
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") not in RESOURCES:
                raise _Exit(1, f"error: resource mapping not found for kind {doc.get('kind')!r} in {args.filename}")
            rt = RESOURCES[doc["kind"]]
            namespace = (doc.get("metadata") or {}).get("namespace") or args.namespace
            name = (doc.get("metadata") or {}).get("name", "")
            body = yaml.safe_dump(doc).encode()
            status, result = self._call(
                "PATCH", self._url(rt, namespace, name, query), body, "application/apply-patch+yaml"
            )
            self._check(status, result)
            applied.append(result)
        self._print(args, applied, out, single=len(applied) == 1, action="serverside-applied")

    def _patch(self, args: _Args, files: dict[str, bytes], out: list[str]) -> None:
        refs = self._refs(args.positional)
        if len(refs) != 1:
            raise _Exit(1, "error: the run-command emulator patches exactly one object (kind/name)")
        ((rt, name),) = refs
        content_types = {"json": "application/json-patch+json", "merge": "application/merge-patch+json",
                         "strategic": "application/strategic-merge-patch+json"}  # fmt: skip
        if args.patch_type not in content_types:
            raise _Exit(1, f'error: --type must be one of [json merge strategic], not "{args.patch_type}"')
        if args.patch_file:
            if args.patch_file not in files:
                raise _Exit(1, f"error: open {args.patch_file}: no such file or directory")
            patch = files[args.patch_file]
        elif args.patch:
            patch = args.patch.encode()
        else:
            raise _Exit(1, "error: must specify --patch or --patch-file containing the contents of the patch")
        query = {"fieldManager": args.field_manager or "kubectl-patch"}
        status, body = self._call("PATCH", self._url(rt, args.namespace, name, query), patch,
                                  content_types[args.patch_type])  # fmt: skip
        self._check(status, body)
        self._print(args, [body], out, single=True, action="patched")

    def _create_token(self, args: _Args, files: dict[str, bytes], out: list[str]) -> None:
        """create_token.go: Complete (the NAME), Validate (client-side checks), Run (one TokenRequest)."""
        if len(args.positional) != 1:
            raise _Exit(1, f"error: exactly one NAME is required, got {len(args.positional)}\n"
                           "See 'kubectl create token -h' for help and examples")  # fmt: skip
        duration = parse_go_duration(args.duration) if args.duration else 0
        if duration < 0:
            raise _Exit(1, "error: --duration must be greater than or equal to 0")
        if duration % _SECOND_NS:
            raise _Exit(1, "error: --duration cannot be expressed in units less than seconds")
        if any(not audience for audience in args.audiences):
            raise _Exit(1, "error: --audience must not be an empty string")
        if not args.bound_object_kind:
            if args.bound_object_name:
                raise _Exit(1, "error: --bound-object-name can only be set if --bound-object-kind is provided")
            if args.bound_object_uid:
                raise _Exit(1, "error: --bound-object-uid can only be set if --bound-object-kind is provided")
        elif args.bound_object_kind not in _BOUND_OBJECT_KINDS:
            raise _Exit(1, f"error: supported --bound-object-kind values are {', '.join(sorted(_BOUND_OBJECT_KINDS))}")
        elif not args.bound_object_name:
            raise _Exit(1, "error: --bound-object-name is required if --bound-object-kind is provided")
        name = args.positional[0]
        spec: dict = {"audiences": args.audiences or None, "expirationSeconds": None, "boundObjectRef": None}
        if duration > 0:
            spec["expirationSeconds"] = duration // _SECOND_NS
        if args.bound_object_kind:
            ref = {"kind": args.bound_object_kind, "apiVersion": _BOUND_OBJECT_KINDS[args.bound_object_kind],
                   "name": args.bound_object_name, "uid": args.bound_object_uid}  # fmt: skip
            spec["boundObjectRef"] = {k: v for k, v in ref.items() if v}
        request = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": {"token": "", "expirationTimestamp": None},
        }  # as client-go serialises it
        url = f"{self._server}/api/v1/namespaces/{urllib.parse.quote(args.namespace)}/serviceaccounts/" \
              f"{urllib.parse.quote(name)}/token"  # fmt: skip
        status, body = self._call("POST", url, json.dumps(request).encode(), "application/json")
        if status >= 400:
            raise _Exit(1, f"error: failed to create token: {body.get('message') or body.get('reason') or status}")
        token = (body.get("status") or {}).get("token")
        if not token:
            raise _Exit(1, "error: failed to create token: no token in server response")
        if args.output == "json":
            out.append(json.dumps(body, indent=4) + "\n")
        elif args.output == "name":
            out.append(f"tokenrequest.authentication.k8s.io/{(body.get('metadata') or {}).get('name', name)}\n")
        else:
            out.append(token)  # not a terminal: no newline

    def _delete(self, args: _Args, files: dict[str, bytes], out: list[str]) -> None:
        for rt, name in self._refs(args.positional):
            status, body = self._call("DELETE", self._url(rt, args.namespace, name))
            if status == 404 and args.ignore_not_found:
                continue
            self._check(status, body)
            kind = _printed_kind(rt)
            out.append(f"{kind}/{name}\n" if args.output == "name" else f'{kind} "{name}" deleted\n')
