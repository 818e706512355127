"""JSON responses and request parsing shared by the HTTP handlers."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import azure.functions as func

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE_SIZE = 200  # onboardings per listed page
MAX_JSON_DEPTH = 20


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> func.HttpResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return json_response({"error": error}, self.status)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, indent=None, sort_keys=False),
        status_code=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(headers or {})},
    )


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def json_body(req: func.HttpRequest) -> dict[str, Any]:
    """The request's JSON object; ApiError (413/415/400) for anything else."""
    content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "UnsupportedMediaType", "send the body as application/json", "Content-Type")
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "BodyTooLarge", f"the body may hold at most {MAX_BODY_BYTES} bytes", "body")
    try:
        text = raw.decode("utf-8")
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "InvalidJson", "the body is not valid UTF-8 JSON", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidJson", "the body must be a JSON object", "body")
    if _depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ApiError(400, "InvalidJson", f"the body nests deeper than {MAX_JSON_DEPTH} levels", "body")
    return body


def field_error(reason: str, status: int = 400, code: str = "InvalidField") -> ApiError:
    """A PermanentError reason `field: message` as an ApiError naming the field."""
    field, sep, message = reason.partition(":")
    if sep and field and " " not in field.strip():
        return ApiError(status, code, message.strip(), field.strip())
    return ApiError(status, code, reason)


def flag(req: func.HttpRequest, name: str) -> bool:
    value = (req.params.get(name) or "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise ApiError(400, "InvalidParameter", f"{name} must be true or false", name)


_OWN_SITE = frozenset({"same-origin", "none"})  # the page itself; a URL the user typed or bookmarked
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WORKING_ROUTES = frozenset({"/api/onboardings/{id}/verification"})  # a GET that sets Keyless reading Azure


def cross_site(req: func.HttpRequest, route: str) -> ApiError | None:
    """A 403 when another site made a signed-in browser send this request (cross-site request forgery: the
    team page's session cookie goes with any request the browser sends to Keyless), for what writes or sets
    Keyless working; None otherwise. The browser says who sent it: Sec-Fetch-Site where it sends that,
    else Origin, compared with the request's own host. The `keyless` command, curl and `az rest` send
    neither, and a bearer token is not sent by a browser on its own, so they are never refused here."""
    if (req.method or "GET").upper() in _SAFE_METHODS and route not in _WORKING_ROUTES:
        return None
    site = (req.headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site:
        return None if site in _OWN_SITE else _refused(f"Sec-Fetch-Site is {site!r}")
    origin = (req.headers.get("Origin") or "").strip()
    if not origin:
        return None
    own = (urllib.parse.urlsplit(req.url or "").netloc or req.headers.get("Host") or "").lower()
    sent = urllib.parse.urlsplit(origin).netloc.lower() if origin != "null" else ""
    return None if sent and sent == own else _refused(f"Origin {origin[:100]!r} is not this app")


def _refused(why: str) -> ApiError:
    return ApiError(
        403,
        "CrossSiteRequest",
        f"refused a request another site made your browser send ({why}); use the team page, or the API with a "
        "bearer token",
        "Origin",
    )
