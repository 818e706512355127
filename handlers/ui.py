"""The team page: /api/ui (the HTML), /api/ui/app.js and /api/ui/app.css (its script and style).

A page for people, on the API's own use cases: it calls /api/me and /api/onboardings with same-origin fetch, so the
browser's App Service Authentication session (in Azure) or the dev principal (locally) signs it in, with
the API's rules. No build step: the three files under handlers/static/ are served as they are.

The page is not part of the API (it is not in /api/openapi.json). Every answer carries a strict
Content-Security-Policy: scripts and styles from this origin only, no inline code, fetches to this origin
only, no framing; the script shows every value from the API as text (textContent), never as markup.
"""

from __future__ import annotations

import functools
from pathlib import Path

import azure.functions as func

from handlers._auth import signed_in_caller
from handlers._http import ApiError

bp = func.Blueprint()

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
"""The only files served besides the page: a fixed list, so no path is ever read from the request."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LOGIN = "/.auth/login/aad?post_login_redirect_uri=/api/ui"
"""App Service Authentication's sign-in, back to the page after it (Azure only)."""


@functools.cache
def _file(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _answer(body: bytes | str, mimetype: str, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype=mimetype, charset="utf-8", headers=dict(HEADERS))


@bp.function_name("ui_page")
@bp.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def ui_page(req: func.HttpRequest) -> func.HttpResponse:
    """The page, for a signed-in caller (the API's own sign-in check); otherwise why not, as plain text."""
    try:
        signed_in_caller(req)
    except ApiError as exc:
        hint = f"\nSign in: {LOGIN}" if exc.status == 401 else ""
        return _answer(f"{exc.status} {exc.code}: {exc.message}{hint}\n", "text/plain", exc.status)
    return _answer(_file("index.html"), "text/html")


@bp.function_name("ui_asset")
@bp.route(route="ui/{asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def ui_asset(req: func.HttpRequest) -> func.HttpResponse:
    """The page's script or style sheet (code, no data: served as the page's own files, to anyone)."""
    name = req.route_params.get("asset") or ""
    if name not in ASSETS:
        return _answer("404 NotFound: the page has no such file\n", "text/plain", 404)
    return _answer(_file(name), ASSETS[name])
