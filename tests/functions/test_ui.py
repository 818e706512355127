"""The team page over HTTP (no browser): what it is served as, its headers, its sign-in, its files.

tests/functions/test_ui_browser.py drives it in a real browser; here, what a browser is told to enforce:
a strict Content-Security-Policy on every answer (no inline code, fetches to this origin only, no
framing), nosniff and the right content types, and a page that holds no inline code to exempt."""

from __future__ import annotations

import json
import re

import pytest

from handlers import ui
from tests.functions.conftest import TEAM_GROUP, TEAM_OID


def directives(csp: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in (part.strip() for part in csp.split(";")) if d}


def assert_locked_down(resp, mimetype: str) -> None:
    assert resp.mimetype == mimetype and resp.charset == "utf-8"
    headers = resp.headers
    policy = directives(headers["Content-Security-Policy"])
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"


def get(host, name: str, asset: str | None = None, **kw):
    url = "/api/ui" + (f"/{asset}" if asset else "")
    return host.http(name, "GET", url, route_params={"asset": asset} if asset else None, **kw)


def test_the_page_is_html_under_a_strict_policy_with_no_inline_code(host):
    status, page, resp = get(host, "ui_page")
    assert status == 200
    assert_locked_down(resp, "text/html")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/api/ui/app.js" defer>']
    assert '<link rel="stylesheet" href="/api/ui/app.css">' in page
    assert "<style" not in page and not re.search(r"\sstyle=", page), "inline style: the policy refuses it"
    assert not re.search(r"\son[a-z]+=", page), "an inline event handler: the policy refuses it"
    labelled = set(re.findall(r'<label for="([^"]+)"', page))
    inputs = set(re.findall(r'<input id="([^"]+)"', page))
    assert inputs and inputs == labelled, "every input has its label"


@pytest.mark.parametrize("asset, mimetype", [("app.js", "text/javascript"), ("app.css", "text/css")])
def test_the_pages_files_are_served_with_their_types(host, asset, mimetype):
    status, text, resp = get(host, "ui_asset", asset)
    assert status == 200
    assert_locked_down(resp, mimetype)
    assert text == (ui.STATIC / asset).read_text()


@pytest.mark.parametrize("asset", ["index.html", "..%2Fui.py", "../ui.py", "APP.JS", "app.js.map", ""])
def test_no_other_file_is_served(host, asset):
    status, text, resp = host.http("ui_asset", "GET", "/api/ui/x", route_params={"asset": asset})
    assert status == 404
    assert_locked_down(resp, "text/plain")
    assert "def " not in text and "<html" not in text


def test_the_script_writes_text_never_markup():
    """Every value from the API goes through textContent: nothing in the script parses markup or code."""
    script = (ui.STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "textContent" in script


def test_every_element_the_script_names_is_on_the_page():
    """The script finds the page's elements by id, and the form's fields name their lists of offered ids:
    an id renamed on one side only would break the page silently (a null where an element was)."""
    page = (ui.STATIC / "index.html").read_text()
    script = (ui.STATIC / "app.js").read_text()
    ids = set(re.findall(r'\sid="([^"]+)"', page))
    named = set(re.findall(r'\$\("([^"]+)"\)', script))
    assert {"signed-in", "rules", "access-hint", "cluster-ids", "account-ids"} <= named
    assert named - ids == set(), "the script names elements the page does not have"
    lists = set(re.findall(r'\slist="([^"]+)"', page))
    assert lists == {"cluster-ids", "account-ids"} and lists <= ids


def test_the_page_is_behind_the_apis_sign_in(host, monkeypatch):
    """No principal and no dev principal: 401 as text, with App Service Authentication's sign-in link;
    the dev principal (locally) or the principal header (App Service Authentication) gets the page."""
    monkeypatch.delenv("KEYLESS_DEV_PRINCIPAL", raising=False)
    status, text, resp = get(host, "ui_page", principal=None)
    assert status == 401
    assert_locked_down(resp, "text/plain")
    assert "Unauthenticated" in text and ui.LOGIN in text and "<html" not in text

    dev = {"oid": TEAM_OID, "groups": [TEAM_GROUP], "name": "dev@contoso.com"}
    monkeypatch.setenv("KEYLESS_DEV_PRINCIPAL", json.dumps(dev))
    from shared.app import composition

    composition.reset()
    status, text, _ = get(host, "ui_page", principal=None)
    assert status == 200 and text.startswith("<!doctype html>")
    assert get(host, "ui_page")[0] == 200


def test_a_forged_principal_is_refused(host):
    status, text, _ = get(host, "ui_page", principal="not base64 json")
    assert status == 401 and "<html" not in text
