"""The team page in a real browser, as a team member uses it (Debian's chromium and chromium-driver, Selenium).

The app's HTTP functions are served on localhost through the suite's driver (tests/serve_functions.py, as
`func start` would); the browser is signed in as the dev principal. The member reads their onboardings,
asks for one (the dry-run plan first, then the request), watches it reach `verified` while the test runs
the queue worker, opens its verification, and deletes it after a confirmation. The page says who is signed
in and what they may ask for (GET /api/me): the rules that name them, with each rule's quota in use, the exact
resource ids offered in the form, and what to do when no rule names them. A reason or rule name holding markup
is shown as text, and the page works under its own Content-Security-Policy (the browser reports no refusal).

Screenshots go to $UI_TEST_SCREENSHOTS when set (a folder), else to the test's tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import AI, ai_service
from tests.functions.conftest import TEAM_GROUP, TEAM_OID, access_policy, principal_header, reconfigure
from tests.serve_functions import FunctionServer

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (.ci/run installs them)", allow_module_level=True
    )

MARKUP = '<script>alert(1)</script><img src=x onerror="window.injected=1">'
VERIFY_SECONDS = 120.0
DEV = {"oid": TEAM_OID, "groups": [TEAM_GROUP], "name": "dev@contoso.com"}


@pytest.fixture
def server(host, monkeypatch):
    monkeypatch.setenv("KEYLESS_DEV_PRINCIPAL", json.dumps(DEV))
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")
    composition.reset()
    served = FunctionServer(host).start()
    yield served
    served.stop()
    assert not served.errors, served.errors  # every API answer the page got is one the document allows


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("UI_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The page makes a card again whenever its onboarding changes, so an element found in one WebDriver call can be
# gone by the next. Each helper finds and reads a card in one script, which runs between the page's own tasks.
FIND_CARD = """
for (const c of document.querySelectorAll("#onboardings li.card")) {
  if (c.querySelector("h3").innerText === arguments[0]) return c;
}
return null;
"""


def card(driver, title: str):
    """The card titled `title` (or None): for reading cards that no longer change."""
    return driver.execute_script(FIND_CARD, title)


def card_status(driver, title: str) -> str | None:
    """The status badge's text of the card titled `title`, read in the same script that found it."""
    return driver.execute_script(
        "const c = (() => {" + FIND_CARD + "})(); return c && c.querySelector('.badge').innerText;", title
    )


# What the page says of the caller (GET /api/me), read in one script: the page makes the rules' list again
# whenever it reads /api/me, so nothing found in one WebDriver call is read in another.
READ_ACCESS = """
const $ = (id) => document.getElementById(id);
const texts = (sel) => [...document.querySelectorAll(sel)].map((n) => n.innerText);
const values = (sel) => [...document.querySelectorAll(sel)].map((n) => n.value);
return {
  signedIn: $("signed-in").hidden ? null : $("signed-in").innerText,
  dev: !$("me-dev").hidden,
  signOut: $("sign-out").hidden ? null : $("sign-out").getAttribute("href"),
  hint: $("access-hint").hidden ? null : $("access-hint").innerText,
  rules: [...document.querySelectorAll("#rules li.rule")].map((li) => ({
    name: li.querySelector("h3").innerText,
    text: li.innerText,
    quota: li.querySelector(".quota").innerText,
    markup: li.querySelectorAll("script, img, b").length,
  })),
  clusterIds: values("#cluster-ids option"),
  accountIds: values("#account-ids option"),
  cluster: $("f-cluster").value,
  account: $("f-account").value,
  focused: document.activeElement === document.body,
  scrolls: document.documentElement.scrollWidth > window.innerWidth,
};
"""


def access(driver) -> dict:
    """Who the page says is signed in and what they may ask for, read in one script."""
    return driver.execute_script(READ_ACCESS)  # type: ignore[no-any-return]


def focus_card_button(driver, title: str) -> None:
    """Put the keyboard's focus on the card's button, as a user tabbing to it would."""
    assert driver.execute_script(
        "const c = (() => {" + FIND_CARD + "})(); if (!c) return false; c.querySelector('button').focus(); "
        "return true;",
        title,
    ), f"no card titled {title}"


def seed_failed_with_markup(host) -> str:
    """An onboarding of the team whose reason holds markup, as the API stores any reason: asked for through
    the API, its queued run dropped, and its record marked failed with that reason (what a worker would write)."""
    body = {"cluster": CLUSTER_ID, "namespace": "team-b", "serviceAccount": "markup", "openAIAccount": ACCOUNT_ID}
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", body)
    assert status == 202, created
    host.queue.clear_messages()
    ledger = composition.service().ledger
    record = ledger.get(created["id"])
    ledger.save(dataclasses.replace(record, status="failed", reason=f"the cluster said: {MARKUP}"))
    return "team-b/markup"


def csp_refusals(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


@pytest.mark.slow
def test_a_team_member_requests_watches_verifies_and_deletes(server, browser, host, kube, shots):
    ai_service(kube)
    failed = seed_failed_with_markup(host)
    mine = f"{NAMESPACE}/{SERVICE_ACCOUNT}"
    driver, wait = browser, WebDriverWait(browser, 20, poll_frequency=0.2)

    with urllib.request.urlopen(server.url + "/api/ui", timeout=10) as resp:
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    driver.get(server.url + "/api/ui")

    # The list: the failed onboarding, its reason as text; nothing it holds became markup or ran.
    wait.until(lambda d: card(d, failed))
    shown = card(driver, failed)
    assert shown.find_element(By.CSS_SELECTOR, ".reason").text == f"the cluster said: {MARKUP}"
    assert card_status(driver, failed) == "failed"
    assert driver.find_elements(By.CSS_SELECTOR, "#onboardings script, #onboardings img") == []
    assert driver.execute_script("return document.scripts.length") == 1
    assert driver.execute_script("return window.injected === undefined")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no alert() ran

    # Who is signed in, and what they may ask for, before the request: team-a names them through their group;
    # the failed onboarding is still wanted (desired present), so it holds one binding of the quota.
    wait.until(lambda d: access(d)["rules"])
    me = access(driver)
    assert me["signedIn"].startswith(f"Signed in as {DEV['name']} ({TEAM_OID})"), me
    assert me["dev"] and me["hint"] is None, me
    assert me["signOut"] is None, "the dev principal has no session to end"
    [rule] = me["rules"]
    assert rule["name"] == "team-a" and rule["quota"] == "1 of 250 bindings in use", rule
    for shown_value in (f"group {TEAM_GROUP}", "team-a", "team-b", "ns-*", "ai-service", "chat-*"):
        assert shown_value in rule["text"], (shown_value, rule["text"])
    assert CLUSTER_ID.split("/providers/")[0] in rule["text"], "a subscription scope is shown in its rule"
    assert me["clusterIds"] == [] and me["accountIds"] == [], "a scope is not offered as a resource id"
    assert me["focused"], "nothing took the keyboard's focus on load"
    driver.execute_script("document.getElementById('access-title').scrollIntoView()")
    driver.save_screenshot(str(shots / "keyless-ui-access.png"))
    driver.execute_script("window.scrollTo(0, 0)")

    # The request: the plan first (nothing written), then the request itself.
    for field, text in (
        ("f-cluster", CLUSTER_ID),
        ("f-namespace", NAMESPACE),
        ("f-service-account", SERVICE_ACCOUNT),
        ("f-account", ACCOUNT_ID),
        ("f-workloads", AI),
    ):
        driver.find_element(By.ID, field).send_keys(text)
    driver.find_element(By.ID, "f-workloads").send_keys(Keys.ENTER)  # submits the form, as a keyboard user would
    wait.until(lambda d: d.find_element(By.ID, "plan").is_displayed())
    plan = driver.find_element(By.ID, "plan-fields").text
    assert "Allowed by\nrule 'team-a'" in plan, plan
    assert driver.find_elements(By.CSS_SELECTOR, "#plan-steps li"), "the plan lists its steps"
    assert card(driver, mine) is None, "a dry run writes nothing"
    assert driver.switch_to.active_element.get_attribute("id") == "plan-title"
    driver.save_screenshot(str(shots / "keyless-ui-plan.png"))
    driver.find_element(By.ID, "send").click()

    # Watch it reach verified: the page reads it again while the test runs the worker.
    wait.until(lambda d: card(d, mine))
    wait.until(lambda d: [r["quota"] for r in access(d)["rules"]] == ["2 of 250 bindings in use"])
    assert card_status(driver, mine) != "verified", "the card is there before the worker ran"
    focus_card_button(driver, mine)  # a keyboard user waits on the card's button
    WebDriverWait(driver, VERIFY_SECONDS, poll_frequency=0.5).until(
        lambda d: server.drain() >= 0 and card_status(d, mine) == "verified"
    )
    focused = driver.switch_to.active_element
    assert focused.get_attribute("aria-label") == f"Details of {mine}", "the card, read again, kept the focus"
    focused.send_keys(Keys.ENTER)
    wait.until(lambda d: d.switch_to.active_element.get_attribute("id") == "detail-title")
    assert driver.find_element(By.ID, "detail").is_displayed()
    assert "Status\nverified" in driver.find_element(By.ID, "detail-fields").text

    # Its verification, check by check, with evidence.
    driver.find_element(By.ID, "verify").click()
    wait.until(lambda d: d.find_element(By.ID, "verification").is_displayed())
    checks = driver.find_elements(By.CSS_SELECTOR, "#checks li")
    assert checks and all(c.find_element(By.CSS_SELECTOR, ".badge").text == "pass" for c in checks), [
        c.text for c in checks
    ]
    assert driver.find_elements(By.CSS_SELECTOR, "#checks .evidence dt"), "each check shows its evidence"
    assert driver.find_element(By.CSS_SELECTOR, "#verification-summary .badge").text == "pass"
    driver.save_screenshot(str(shots / "keyless-ui-verification.png"))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(shots / "keyless-ui-list.png"))

    # Delete: the confirmation first; Cancel (focused first) keeps it, Escape too.
    driver.find_element(By.ID, "delete").click()
    dialog = driver.find_element(By.ID, "confirm")
    wait.until(lambda d: dialog.is_displayed())
    assert driver.find_element(By.ID, "confirm-binding").text == mine
    assert driver.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    driver.save_screenshot(str(shots / "keyless-ui-confirm.png"))
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda d: not dialog.is_displayed())
    assert card_status(driver, mine) == "verified"
    driver.find_element(By.ID, "delete").click()
    wait.until(lambda d: dialog.is_displayed())
    driver.find_element(By.ID, "confirm-delete").click()
    WebDriverWait(driver, VERIFY_SECONDS, poll_frequency=0.5).until(
        lambda d: server.drain() >= 0 and card_status(d, mine) == "removed"
    )
    assert ("DELETE", f"/api/onboardings/{card(driver, mine).get_attribute('data-id')}", 202) in server.calls

    # On a phone: one column, nothing wider than the screen.
    driver.set_window_size(390, 844)
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    driver.save_screenshot(str(shots / "keyless-ui-phone.png"))
    assert csp_refusals(driver) == [], "the page needs nothing its policy refuses"


@pytest.mark.slow
def test_the_page_offers_a_callers_exact_ids_and_says_what_to_do_when_no_rule_names_them(
    server, browser, host, monkeypatch, shots
):
    """A rule that names exact ids: they are offered in the form (the one account prefilled, the cluster not,
    since a scope is allowed too); its name, holding markup, is text. A caller no rule names: the hint, and
    the form still asks the API, which says why not."""
    policy = access_policy()
    policy["rules"][0]["name"] = f"team-a {MARKUP}"
    policy["rules"][0]["clusters"] = [CLUSTER_ID, CLUSTER_ID.split("/resourceGroups/")[0]]
    policy["rules"][0]["accounts"] = [ACCOUNT_ID]
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    driver, wait = browser, WebDriverWait(browser, 20, poll_frequency=0.2)
    driver.set_window_size(390, 844)
    driver.get(server.url + "/api/ui")

    wait.until(lambda d: access(d)["rules"])
    me = access(driver)
    [rule] = me["rules"]
    assert rule["name"] == f"team-a {MARKUP}" and rule["markup"] == 0, rule
    assert rule["quota"] == "0 of 250 bindings in use", rule
    assert driver.execute_script("return window.injected === undefined && document.scripts.length === 1")
    assert me["clusterIds"] == [CLUSTER_ID] and me["accountIds"] == [ACCOUNT_ID], me
    assert me["cluster"] == "", "a scope is allowed too: the one exact cluster is offered, not chosen"
    assert me["account"] == ACCOUNT_ID, "the only account the caller may ask for is filled in"
    assert me["focused"] and not me["scrolls"], me
    driver.save_screenshot(str(shots / "keyless-ui-access-phone.png"))

    nobody = {"oid": "eeeeeeee-0000-4000-8000-000000000005", "groups": [], "name": "carol@contoso.com"}
    reconfigure(monkeypatch, KEYLESS_DEV_PRINCIPAL=json.dumps(nobody))
    driver.refresh()
    wait.until(lambda d: access(d)["hint"])
    me = access(driver)
    assert me["signedIn"].startswith(f"Signed in as carol@contoso.com ({nobody['oid']})"), me
    assert "KEYLESS_ACCESS_POLICY" in me["hint"] and me["rules"] == [], me
    assert me["clusterIds"] == [] and me["account"] == "" and not me["scrolls"], me
    driver.save_screenshot(str(shots / "keyless-ui-no-rule-phone.png"))
    for field, text in (
        ("f-cluster", CLUSTER_ID),
        ("f-namespace", NAMESPACE),
        ("f-service-account", SERVICE_ACCOUNT),
        ("f-account", ACCOUNT_ID),
    ):
        driver.find_element(By.ID, field).send_keys(text)
    driver.find_element(By.ID, "preview").click()
    wait.until(lambda d: d.find_element(By.ID, "problem").is_displayed())
    assert "rule" in driver.find_element(By.ID, "problem").text, "the API's 403 reason is shown"
    assert not driver.find_element(By.ID, "plan").is_displayed()
    assert ("POST", "/api/onboardings", 403) in server.calls, server.calls
    assert csp_refusals(driver) == [], "the page needs nothing its policy refuses"


@pytest.mark.slow
def test_signed_in_through_entra_the_page_offers_to_sign_out(host, browser, monkeypatch):
    """Behind App Service Authentication (its header, as in Azure) the session can be ended from the page."""
    monkeypatch.delenv("KEYLESS_DEV_PRINCIPAL", raising=False)
    composition.reset()
    served = FunctionServer(host, principal=principal_header(name="alice@contoso.com")).start()
    try:
        browser.get(served.url + "/api/ui")
        WebDriverWait(browser, 20, poll_frequency=0.2).until(lambda d: access(d)["signedIn"])
        me = access(browser)
        assert me["signedIn"].startswith(f"Signed in as alice@contoso.com ({TEAM_OID})") and not me["dev"], me
        assert me["signOut"] == "/.auth/logout?post_logout_redirect_uri=/api/ui", me
    finally:
        served.stop()
    assert not served.errors, served.errors
