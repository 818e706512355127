// The Keyless team page: the caller's onboardings, a binding's verification, a request form with its
// dry-run plan, delete with a confirmation. Same-origin fetch to /api/onboardings (the browser's sign-in
// session goes with it). Every value from the API is shown with textContent: never parsed as markup.
"use strict";

(() => {
  const API = "/api/onboardings";
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
      for (const id of moving) {
        try {
          records.set(id, await call("GET", `${API}/${encodeURIComponent(id)}`));
        } catch (err) {
          if (err.status !== 404) throw err;
          records.delete(id);
        }
      }
      renderList();
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
  }

  // --- wiring --------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("refresh").addEventListener("click", () => attempt(() => loadList(false)));
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
    attempt(() => loadList(false));
  });
})();
