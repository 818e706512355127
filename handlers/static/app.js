// The Keyless team page: who is signed in and what they may ask for, the caller's onboardings, a
// binding's verification, a request form with its dry-run plan, delete with a confirmation. Same-origin
// fetch to /api/me and /api/onboardings (the browser's sign-in session goes with it). Every value from the
// API is shown with textContent: never parsed as markup.
"use strict";

(() => {
  const API = "/api/onboardings";
  const ME = "/api/me";
  const LOGIN = "/.auth/login/aad?post_login_redirect_uri=/api/ui";
  const POLL_MS = 2000;
  const SETTLED = new Set(["verified", "failed", "refused", "revoked", "removed"]);
  const STATUSES = new Set([
    "pending", "reconciling", "ready", "verified", "not-ready", "failed", "refused", "revoked", "offboarding",
    "removed", "pass", "fail", "created", "updated", "unchanged", "deleted", "absent", "not-yet", "skipped", "left",
  ]);

  const $ = (id) => document.getElementById(id);
  const records = new Map(); // id -> the onboarding as the API last answered it
  let continuation = null;
  let openId = null;
  let previewed = null; // the request body whose plan is shown
  let pollTimer = null;
  let meShown = false; // /api/me answered once (the form's only choices are filled in then)

  class ApiFailure extends Error {
    constructor(status, body) {
      const e = body && body.error;
      super(e ? `${e.message}${e.field ? ` (${e.field})` : ""}` : `the app answered ${status}`);
      this.status = status;
      this.code = e ? e.code : "";
    }
  }

  async function call(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) throw new ApiFailure(resp.status, data);
    return data;
  }

  // --- small DOM helpers: text only ------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function badge(status) {
    const known = STATUSES.has(status) ? status : "other";
    return el("span", status, `badge badge-${known}`);
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function lastPart(id) {
    return String(id || "").split("/").filter(Boolean).pop() || String(id || "");
  }

  function value(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  function fields(dl, pairs) {
    dl.replaceChildren();
    for (const [name, v] of pairs) {
      if (v === "" || v === null || v === undefined) continue;
      dl.append(el("dt", name), el("dd", v));
    }
  }

  function steps(ol, list) {
    ol.replaceChildren();
    for (const s of list || []) {
      const li = el("li");
      li.append(el("span", s.step, "step-name"), " ", badge(s.outcome));
      if (s.reason) li.append(el("p", s.reason, "reason"));
      ol.append(li);
    }
    if (!ol.children.length) ol.append(el("li", "none yet"));
  }

  // --- messages ------------------------------------------------------------------------------------

  function notice(text) {
    $("notice").textContent = text;
  }

  function problem(err) {
    const box = $("problem");
    box.replaceChildren();
    if (!err) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.append(el("p", err.message || String(err)));
    if (err.status === 401) {
      const link = el("a", "Sign in");
      link.href = LOGIN;
      box.append(link);
    }
  }

  async function attempt(action) {
    try {
      problem(null);
      await action();
    } catch (err) {
      problem(err);
    }
  }

  // --- who is signed in, and what they may ask for ---------------------------------------------------

  async function loadMe() {
    let me;
    try {
      me = await call("GET", ME);
    } catch (err) {
      // The page works without it (the API still answers each request with its reason); a 401 is said by
      // the list's own problem box, with the sign-in link.
      $("access-unknown").textContent = `What you may ask for could not be read: ${err.message}`;
      $("access-unknown").hidden = false;
      return;
    }
    $("access-unknown").hidden = true;
    renderMe(me);
  }

  function renderMe(me) {
    const who = me.name ? [el("strong", me.name), " (", el("code", me.objectId), ")"] : [el("code", me.objectId)];
    $("me-who").replaceChildren("Signed in as ", ...who);
    $("me-dev").hidden = me.signedInWith !== "dev-principal";
    $("sign-out").hidden = me.signedInWith !== "entra"; // App Service Authentication's session ends there
    $("signed-in").hidden = false;

    $("access-hint-text").textContent = me.hint || "";
    $("access-hint").hidden = !me.hint;
    $("rules").replaceChildren(...me.rules.map(ruleCard));
    fields($("access-fields"), [
      ["Default role", me.defaultRole],
      ["Subscriptions allowed", me.allowedSubscriptions.join("\n")],
    ]);
    offer($("f-cluster"), $("cluster-ids"), me.rules.map((r) => r.clusters), !meShown);
    offer($("f-account"), $("account-ids"), me.rules.map((r) => r.accounts), !meShown);
    meShown = true;
  }

  function ruleCard(rule) {
    const li = el("li", null, "card rule");
    li.append(el("h3", rule.name));
    const full = rule.liveBindings >= rule.maxBindings;
    li.append(el("p", `${rule.liveBindings} of ${rule.maxBindings} bindings in use`, full ? "quota quota-full" : "quota"));
    const dl = el("dl", null, "fields");
    for (const [name, list] of [
      ["Names you by", rule.matchedBy],
      ["Clusters", rule.clusters],
      ["Namespaces", rule.namespaces],
      ["Service accounts", rule.serviceAccounts],
      ["Azure OpenAI accounts", rule.accounts],
      ["Roles", rule.roles],
      ["Deployments", rule.workloads],
    ]) {
      const dd = el("dd");
      if (list.length) {
        const ul = el("ul", null, "values");
        for (const v of list) ul.append(el("li", v));
        dd.append(ul);
      } else {
        dd.textContent = "none";
      }
      dl.append(el("dt", name), dd);
    }
    li.append(dl);
    return li;
  }

  // A rule's exact resource ids (not the subscription or resource group scopes it may also name) are
  // offered as the field's values; when the caller may ask for just one thing there, it is filled in (on
  // the first answer only: a field the user emptied later stays empty).
  function offer(input, datalist, perRule, prefill) {
    const all = new Map(); // lower-cased -> as the rule spells it
    for (const list of perRule) for (const v of list) if (!all.has(v.toLowerCase())) all.set(v.toLowerCase(), v);
    const exact = [...all.values()].filter((v) => v.toLowerCase().includes("/providers/"));
    datalist.replaceChildren(...exact.map((v) => {
      const option = el("option");
      option.value = v;
      return option;
    }));
    if (prefill && exact.length === 1 && all.size === 1 && !input.value && document.activeElement !== input) {
      input.value = exact[0];
    }
  }

  // --- the list ------------------------------------------------------------------------------------

  async function loadList(more) {
    const params = new URLSearchParams({ pageSize: "50" });
    if (more && continuation) params.set("continuationToken", continuation);
    const page = await call("GET", `${API}?${params}`);
    if (!more) records.clear();
    for (const r of page.value) records.set(r.id, r);
    continuation = page.continuationToken || null;
    renderList();
  }

  function card(r) {
    const li = el("li", null, "card");
    li.dataset.id = r.id;
    const title = el("h3", `${r.namespace}/${r.serviceAccount}`);
    const where = el("p", `${lastPart(r.cluster)} → ${lastPart(r.openAIAccount)}`, "where");
    where.title = `${r.cluster}\n${r.openAIAccount}`;
    const status = el("p", null, "status");
    status.append(badge(r.status));
    li.append(title, where, status);
    if (r.reason) li.append(el("p", r.reason, "reason"));
    if (r.nextAttemptAt) {
      const next = el("p", "Next attempt: ", "next");
      const time = el("time", when(r.nextAttemptAt));
      time.dateTime = r.nextAttemptAt;
      next.append(time);
      li.append(next);
    }
    const open = el("button", "Details");
    open.type = "button";
    open.setAttribute("aria-label", `Details of ${r.namespace}/${r.serviceAccount}`);
    open.addEventListener("click", () => attempt(() => openDetail(r.id)));
    li.append(open);
    return li;
  }

  // A card is made again only when its onboarding changed, and keeps the keyboard's focus when it is:
  // the page re-reads moving onboardings every few seconds, and focus must not jump away meanwhile.
  const shown = new Map(); // id -> [the answer's JSON, its card]

  function renderList() {
    const list = $("onboardings");
    const focused = document.activeElement;
    let refocus = null;
    const cards = [];
    for (const r of records.values()) {
      const json = JSON.stringify(r);
      const before = shown.get(r.id);
      if (before && before[0] === json) {
        cards.push(before[1]);
        continue;
      }
      const made = card(r);
      if (before && before[1].contains(focused)) refocus = made;
      shown.set(r.id, [json, made]);
      cards.push(made);
    }
    for (const id of [...shown.keys()]) if (!records.has(id)) shown.delete(id);
    // Cards that stay are never moved (a moved element loses focus): the old ones go, the new ones go in.
    const keep = new Set(cards);
    for (const old of [...list.children]) if (!keep.has(old)) old.remove();
    cards.forEach((c, i) => {
      if (list.children[i] !== c) list.insertBefore(c, list.children[i] || null);
    });
    if (refocus) refocus.querySelector("button").focus();
    $("empty").hidden = records.size > 0 || Boolean(continuation);
    $("more").hidden = !continuation;
    if (openId && records.has(openId)) renderDetail(records.get(openId));
    schedulePoll();
  }

  // Onboardings still on their way are read again until they settle.
  function schedulePoll() {
    clearTimeout(pollTimer);
    const moving = [...records.values()].filter((r) => !SETTLED.has(r.status)).map((r) => r.id);
    if (!moving.length) return;
    pollTimer = setTimeout(() => attempt(async () => {
      let settled = false;
      for (const id of moving) {
        try {
          const r = await call("GET", `${API}/${encodeURIComponent(id)}`);
          records.set(id, r);
          settled = settled || SETTLED.has(r.status);
        } catch (err) {
          if (err.status !== 404) throw err;
          records.delete(id);
          settled = true;
        }
      }
      renderList();
      if (settled) await loadMe(); // a refused or removed binding leaves its rule's quota
    }), POLL_MS);
  }

  // --- one onboarding ------------------------------------------------------------------------------

  async function openDetail(id) {
    const r = await call("GET", `${API}/${encodeURIComponent(id)}`);
    records.set(r.id, r);
    if (openId !== r.id) $("verification").hidden = true;
    openId = r.id;
    renderList();
    $("detail").hidden = false;
    $("detail-title").focus();
  }

  function renderDetail(r) {
    $("detail-title").textContent = `Onboarding ${r.namespace}/${r.serviceAccount}`;
    fields($("detail-fields"), [
      ["Status", r.status],
      ["Reason", r.reason],
      ["Next attempt", when(r.nextAttemptAt)],
      ["Last error", r.lastError],
      ["Id", r.id],
      ["Cluster", r.cluster],
      ["Namespace", r.namespace],
      ["Service account", r.serviceAccount],
      ["Azure OpenAI account", r.openAIAccount],
      ["Role", r.roleDefinitionId],
      ["Deployments", (r.workloads || []).join(", ")],
      ["Identity (client id)", r.identity && r.identity.clientId],
      ["Attempts", r.attempts],
      ["Requested by", r.requestedBy],
      ["Updated", when(r.updatedAt)],
    ]);
    steps($("detail-steps"), r.steps);
    const live = !["removed", "offboarding", "refused"].includes(r.status) && r.desired !== "absent";
    $("delete").disabled = !live;
    $("verify").disabled = !live;
  }

  async function verify() {
    const id = openId;
    notice("Verifying… (checks run live against Azure and the cluster)");
    let report;
    try {
      report = await call("GET", `${API}/${encodeURIComponent(id)}/verification`);
    } catch (err) {
      notice("");
      throw err;
    }
    notice(`Verification: ${report.status}`);
    $("verification").hidden = false;
    $("verification-summary").replaceChildren(
      "Overall: ", badge(report.status), ` (checked ${when(report.checkedAt)})`,
    );
    const list = $("checks");
    list.replaceChildren();
    for (const c of report.checks) {
      const li = el("li", null, "check");
      li.append(el("span", c.name, "step-name"), " ", badge(c.status));
      if (c.reason) li.append(el("p", c.reason, "reason"));
      if (c.evidence && Object.keys(c.evidence).length) {
        const dl = el("dl", null, "fields evidence");
        fields(dl, Object.entries(c.evidence).map(([k, v]) => [k, value(v)]));
        li.append(dl);
      }
      list.append(li);
    }
    const account = $("account");
    account.replaceChildren();
    const a = report.keylessAccount;
    if (a) {
      account.append(el("h4", `Account ${lastPart(a.account)}`));
      const dl = el("dl", null, "fields");
      fields(dl, [
        ["API keys still work", a.localAuthEnabled === null ? "unknown" : a.localAuthEnabled ? "yes" : "no"],
        ["Opted in to keys off", a.optedIn === null ? "unknown" : a.optedIn ? "yes" : "no"],
        ["Would break if keys were turned off",
          a.wouldBreak.map((w) => `${w.namespace}/${w.pod} ${w.container} (${w.apiKeys.join(", ")})`).join("; ")],
        ["Blockers", a.blockers.join("; ")],
      ]);
      account.append(dl);
    }
    $("verification-title").focus();
  }

  // --- delete, with a confirmation -----------------------------------------------------------------

  function askDelete() {
    const r = records.get(openId);
    $("confirm-binding").textContent = `${r.namespace}/${r.serviceAccount}`;
    $("confirm").showModal();
  }

  async function confirmDelete() {
    $("confirm").close();
    const r = await call("DELETE", `${API}/${encodeURIComponent(openId)}`);
    records.set(r.id, r);
    notice(`Offboarding ${r.namespace}/${r.serviceAccount}: asked for`);
    renderList();
    await loadMe();
    $("detail-title").focus();
  }

  // --- request, plan first -------------------------------------------------------------------------

  function requestBody() {
    const form = $("request");
    const body = {};
    for (const name of ["cluster", "namespace", "serviceAccount", "openAIAccount"]) {
      body[name] = form.elements[name].value.trim();
    }
    const role = form.elements.role.value.trim();
    if (role) body.role = role;
    const workloads = form.elements.workloads.value.split(/[\s,]+/).filter(Boolean);
    if (workloads.length) body.workloads = workloads;
    return body;
  }

  function discardPlan() {
    previewed = null;
    $("plan").hidden = true;
  }

  async function preview() {
    discardPlan();
    const body = requestBody();
    const answer = await call("POST", `${API}?dryRun=true`, body);
    const plan = answer.plan;
    previewed = body;
    fields($("plan-fields"), [
      ["Allowed by", answer.grantedBy],
      ["The run would end", plan.status],
      ["Why", plan.reason],
      ["Id", answer.id],
      ["Role", answer.binding.roleDefinitionId],
      ["Kubernetes objects", (plan.kubernetesObjects || []).join(", ")],
    ]);
    steps($("plan-steps"), plan.steps);
    $("plan").hidden = false;
    $("plan-title").focus();
  }

  async function send() {
    const r = await call("POST", API, previewed);
    discardPlan();
    records.set(r.id, r);
    notice(`Requested ${r.namespace}/${r.serviceAccount}: ${r.status}`);
    await openDetail(r.id);
    await loadMe(); // the request is counted in its rule's quota at once
  }

  // --- wiring --------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("refresh").addEventListener("click", () => attempt(() => Promise.all([loadList(false), loadMe()])));
    $("more").addEventListener("click", () => attempt(() => loadList(true)));
    $("close-detail").addEventListener("click", () => {
      openId = null;
      $("detail").hidden = true;
      $("list-title").focus();
    });
    $("verify").addEventListener("click", () => attempt(verify));
    $("delete").addEventListener("click", askDelete);
    $("confirm-cancel").addEventListener("click", () => $("confirm").close());
    $("confirm-delete").addEventListener("click", () => attempt(confirmDelete));
    $("request").addEventListener("submit", (event) => {
      event.preventDefault();
      attempt(preview);
    });
    $("request").addEventListener("input", discardPlan);
    $("send").addEventListener("click", () => attempt(send));
    $("discard").addEventListener("click", () => {
      discardPlan();
      $("f-cluster").focus();
    });
    $("list-title").tabIndex = -1;
    loadMe();
    attempt(() => loadList(false));
  });
})();
