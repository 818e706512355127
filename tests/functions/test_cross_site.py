"""Cross-site request forgery, now that the team page signs in with a session cookie in Azure (App Service
Authentication's login flow): another site a signed-in team member visits makes their browser send requests
to Keyless, and the cookie goes with them. Nothing that writes, or that sets Keyless working, may be sent that
way; the page itself (same origin), the `keyless` command and curl (which send neither header) are unaffected."""

from __future__ import annotations

import pytest

from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}
KEYLESS = "https://func-keyless.azurewebsites.net"
EVIL = "https://evil.azurewebsites.net"  # azurewebsites.net is a public suffix: another app is another site
PAGE = {"Sec-Fetch-Site": "same-origin", "Origin": KEYLESS}
ANOTHER_SITE = [
    {"Sec-Fetch-Site": "cross-site", "Origin": EVIL},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://other.keyless.contoso.com"},
    {"Origin": EVIL},  # a browser that sends no Sec-Fetch-* still sends Origin on a cross-origin POST
    {"Origin": "null"},  # a sandboxed frame, or a redirect across sites
]


def create(host, headers):
    return host.http("onboardings_create", "POST", f"{KEYLESS}/api/onboardings", REQUEST, headers=headers)


@pytest.mark.parametrize("headers", ANOTHER_SITE)
def test_another_site_cannot_ask_for_an_onboarding_through_a_signed_in_browser(host, headers):
    status, err, _ = create(host, headers)
    assert status == 403 and err["error"]["code"] == "CrossSiteRequest", err
    assert host.raw_messages() == [], "nothing queued"


def test_another_site_cannot_delete_or_set_verifying_an_onboarding(host):
    status, created, _ = create(host, PAGE)
    assert status == 202, created
    key = created["id"]
    host.drain()
    url = f"{KEYLESS}/api/onboardings/{key}"
    cross = ANOTHER_SITE[0]
    status, err, _ = host.http("onboardings_delete", "DELETE", url, route_params={"id": key}, headers=cross)
    assert status == 403 and err["error"]["code"] == "CrossSiteRequest", err
    status, err, _ = host.http(
        "onboardings_verification", "GET", url + "/verification", route_params={"id": key}, headers=cross
    )
    assert status == 403 and err["error"]["code"] == "CrossSiteRequest", err
    status, shown, _ = host.http("onboardings_get", "GET", url, route_params={"id": key})
    assert status == 200 and shown["desired"] == "present", "the onboarding is untouched"


def test_the_page_the_command_and_curl_still_work(host):
    status, created, _ = create(host, PAGE)
    assert status == 202, created
    status, _, _ = create(host, {})  # no Origin, no Sec-Fetch-Site: the command, curl, az rest
    assert status == 200
    status, _, _ = create(host, {"Sec-Fetch-Site": "none"})  # typed or bookmarked by the user
    assert status == 200
    status, _, _ = create(host, {"Origin": KEYLESS.upper()})  # hosts compare case-insensitively
    assert status == 200
