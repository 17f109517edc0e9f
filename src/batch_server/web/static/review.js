// The review page: one request at a time, prompt and answer side by side, driven by the
// keyboard. Reads GET /v1/batches/{id}/review a page at a time and stores each verdict
// with PUT …/requests/{custom_id}/annotation (the login's cookie; same-origin fetch).
// Everything shown is set as text (textContent), never as HTML, except a plugin's fragment
// (`rendered`), which the server escaped (docs/plugins.md).
"use strict";

(() => {
  const root = document.getElementById("review");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const batchId = root.dataset.batchId;
  const PAGE = 50;
  const LABELS = { golden: "Golden", fixed: "Fixed", wrong: "Wrong", skip: "Skipped" };
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const state = {
    filter: root.dataset.filter,
    order: root.dataset.order,
    items: [], // the requests loaded so far, in the list's order
    pos: 0, // the one shown; items.length: past the end
    listTotal: 0, // how many the list holds (those reviewed out of the filter included)
    hasMore: false,
    counts: null,
  };

  // -- the API ---------------------------------------------------------------------------

  async function call(url, options = {}) {
    const resp = await fetch(url, { ...options, headers: { Accept: "application/json", ...(options.headers || {}) } });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
    return data;
  }

  function fetchPage(offset) {
    const q = new URLSearchParams({ filter: state.filter, order: state.order, offset: String(offset), limit: String(PAGE) });
    return call(`/v1/batches/${encodeURIComponent(batchId)}/review?${q}`);
  }

  // Whether a loaded request still passes the filter (a verdict can take it out).
  function matches(item) {
    const a = item.annotation;
    if (state.filter === "unreviewed") return !a;
    if (state.filter in LABELS) return Boolean(a) && a.label === state.filter;
    return true;
  }

  function accept(data, gone) {
    const seen = new Set(state.items.map((i) => i.custom_id));
    state.items.push(...data.data.filter((i) => !seen.has(i.custom_id)));
    state.hasMore = data.has_more;
    state.counts = data.counts;
    state.listTotal = gone + data.counts.matching;
  }

  async function reload() {
    state.items = [];
    state.pos = 0;
    accept(await fetchPage(0), 0);
    render();
  }

  // The next page: requests reviewed out of the filter no longer count in its offsets.
  async function more() {
    const gone = state.items.filter((i) => !matches(i)).length;
    accept(await fetchPage(state.items.length - gone), gone);
  }

  async function go(delta) {
    const next = Math.max(0, Math.min(state.pos + delta, state.items.length));
    if (next >= state.items.length && state.hasMore) await more();
    state.pos = Math.min(next, state.items.length);
    render();
  }

  function tally(before, after) {
    const c = state.counts;
    if (!before) c.reviewed += 1;
    if (before && before.label in c.labels) c.labels[before.label] -= 1;
    if (after.label in c.labels) c.labels[after.label] += 1;
  }

  async function save(changes, advance) {
    const item = state.items[state.pos];
    if (!item) return;
    const a = item.annotation || {};
    const body = { label: a.label ?? null, fixed_answer: a.fixed_answer ?? null, note: a.note ?? null, rating: a.rating ?? null, ...changes };
    if (body.label !== "fixed") body.fixed_answer = null;
    const url = `/v1/batches/${encodeURIComponent(batchId)}/requests/${encodeURIComponent(item.custom_id)}/annotation`;
    const saved = await call(url, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    tally(item.annotation, saved);
    item.annotation = saved;
    say(`Saved ${item.custom_id}: ${describe(saved)}`);
    if (advance) await go(1);
    else render();
  }

  // -- rendering -------------------------------------------------------------------------

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => { node.setAttribute(k, v); });
    children.forEach((c) => node.append(c instanceof Node ? c : String(c)));
    return node;
  };

  function tree(value, depth = 0) {
    if (depth > 30) return el("pre", { class: "j-deep" }, JSON.stringify(value, null, 1));
    if (value === null || typeof value === "boolean" || typeof value === "number") {
      return el("span", { class: "j-literal" }, String(value));
    }
    if (typeof value === "string") return el("span", { class: "j-string" }, value);
    if (Array.isArray(value)) {
      if (!value.length) return el("span", { class: "j-literal" }, "[ ]");
      return el("ol", { class: "j-array", start: "0" }, ...value.map((v) => el("li", {}, tree(v, depth + 1))));
    }
    const keys = Object.keys(value);
    if (!keys.length) return el("span", { class: "j-literal" }, "{ }");
    const table = el("table", { class: "j-object" });
    keys.forEach((k) => table.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, tree(value[k], depth + 1)))));
    return table;
  }

  const text = (value, cls = "text") => el("p", { class: cls }, value);

  function content(value) {
    if (typeof value === "string") return text(value);
    if (Array.isArray(value)) {
      const box = el("div");
      value.forEach((part) => box.append(part && part.type === "text" && typeof part.text === "string" ? text(part.text) : tree(part)));
      return box;
    }
    return tree(value);
  }

  function promptView(prompt) {
    const isMessages = Array.isArray(prompt) && prompt.length && prompt.every((m) => m && typeof m === "object" && "role" in m);
    if (!isMessages) return typeof prompt === "string" ? text(prompt) : tree(prompt);
    const box = el("div", { class: "messages" });
    prompt.forEach((m) => {
      const body = m.content == null ? tree(Object.fromEntries(Object.entries(m).filter(([k]) => k !== "role"))) : content(m.content);
      box.append(el("div", { class: `msg role-${String(m.role).replace(/[^a-z_]/g, "")}` }, el("span", { class: "role" }, String(m.role)), body));
    });
    return box;
  }

  function answerView(item) {
    if (item.error) {
      const e = item.error;
      return el("div", { class: "error" }, el("strong", {}, "Failed"), " ", el("code", {}, String(e.code || item.status_code || "")), text(String(e.message || JSON.stringify(e))));
    }
    if (item.status_code == null) return text("Not run yet.", "muted");
    const box = el("div", { class: "answer" });
    box.append(item.answer_is_json ? tree(item.answer) : text(item.answer_text ?? "", "text answer-text"));
    box.append(...pluginView(item));
    const a = item.annotation;
    if (a && a.label === "fixed" && a.fixed_answer != null) {
      box.append(el("h3", { class: "fixed-h" }, "Fixed answer"), text(a.fixed_answer, "text fixed-answer"));
    }
    return box;
  }

  // What the template's plugin made of the answer: its fragment, and the ratings.
  function pluginView(item) {
    if (!item.template) return [];
    const box = el("div", { class: "plugin-view", "data-template": item.template });
    box.append(el("h3", {}, `Fields (${item.template})`));
    const fragment = el("div", { class: "plugin-fragment" });
    fragment.innerHTML = item.rendered || "";
    box.append(fragment);
    Object.entries(item.ratings || {}).forEach(([name, r]) => {
      box.append(el("span", { class: "badge", "data-plugin-rating": name }, `${name}: ${JSON.stringify(r.value)}`), " ");
    });
    return [box];
  }

  function describe(a) {
    const parts = [];
    if (a.label) parts.push(LABELS[a.label] || a.label);
    if (a.rating) parts.push(`rated ${a.rating}/5`);
    if (a.note) parts.push("note");
    return parts.join(", ") || "no verdict";
  }

  function verdictView(a) {
    if (!a) return el("span", { class: "muted" }, "Not reviewed yet.");
    const box = el("span");
    if (a.label) box.append(el("span", { class: `badge label-${a.label}`, "data-label": a.label }, LABELS[a.label] || a.label), " ");
    if (a.rating) box.append(el("span", { class: "badge", "data-rating": String(a.rating) }, `${a.rating}/5`), " ");
    if (a.note) box.append(el("span", { class: "note" }, `Note: ${a.note}`), " ");
    if (a.rater) box.append(el("span", { class: "muted small" }, `by ${a.rater}`));
    return box;
  }

  function meta(item) {
    const parts = [item.model || "", `line ${fmt(item.index + 1)}`];
    if (item.confidence != null) parts.push(`mean logprob ${item.confidence.toFixed(3)}`);
    if (item.disagreement != null) parts.push(item.disagreement ? "models disagree" : "models agree");
    return parts.filter(Boolean).join(" · ");
  }

  function progress() {
    const c = state.counts;
    if (!c) return;
    $("review-progress").textContent = `${fmt(c.reviewed)} of ${fmt(c.total)} reviewed`;
    $("review-bar").max = Math.max(c.total, 1);
    $("review-bar").value = c.reviewed;
    $("review-labels").textContent = Object.entries(c.labels).map(([k, n]) => `${LABELS[k] || k} ${fmt(n)}`).join(" · ");
  }

  function render() {
    progress();
    closeEditors();
    const item = state.items[state.pos];
    $("review-item").hidden = !item;
    $("review-empty").hidden = Boolean(item);
    if (!item) {
      $("review-position").textContent = "";
      $("review-empty").textContent = state.items.length
        ? "End of the list. Press k to go back, or choose another filter."
        : "No request matches this filter.";
      return;
    }
    $("review-position").textContent = `Request ${fmt(state.pos + 1)} of ${fmt(state.listTotal)} · ${item.custom_id}`;
    $("review-item").dataset.customId = item.custom_id;
    $("review-prompt").replaceChildren(promptView(item.prompt));
    $("review-answer").replaceChildren(answerView(item));
    $("review-meta").textContent = meta(item);
    $("review-verdict").replaceChildren(verdictView(item.annotation));
    pressed(item.annotation || {});
  }

  // The toolbar shows the stored verdict: its label's and its rating's buttons pressed.
  function pressed(a) {
    const on = { g: a.label === "golden", w: a.label === "wrong", f: a.label === "fixed", s: a.label === "skip" };
    [1, 2, 3, 4, 5].forEach((n) => { on[String(n)] = a.rating === n; });
    document.querySelectorAll(".review-actions [data-key]").forEach((btn) => {
      if (btn.dataset.key in on) btn.setAttribute("aria-pressed", String(on[btn.dataset.key]));
    });
  }

  function say(message, bad = false) {
    const out = $("review-status");
    out.textContent = message;
    out.classList.toggle("error", bad);
  }

  // -- editors, help, keys ---------------------------------------------------------------

  function closeEditors() {
    const open = document.activeElement && document.activeElement.closest(".editor, #review-help");
    ["review-editor", "note-editor"].forEach((id) => { $(id).hidden = true; });
    if (open) document.getElementById("main").focus({ preventScroll: true });
  }

  function openEditor(id, value) {
    if (!state.items[state.pos]) return;
    closeEditors();
    $(id).hidden = false;
    const area = $(id).querySelector("textarea");
    area.value = value;
    area.focus();
  }

  const openFix = () => {
    const item = state.items[state.pos];
    if (item) openEditor("review-editor", (item.annotation && item.annotation.fixed_answer) ?? item.answer_text ?? "");
  };
  const openNote = () => {
    const item = state.items[state.pos];
    if (item) openEditor("note-editor", (item.annotation && item.annotation.note) || "");
  };

  function help(show) {
    $("review-help").hidden = !show;
    if (show) $("help-close").focus();
    else document.getElementById("main").focus({ preventScroll: true });
  }

  // Actions run one after another, so keys pressed quickly apply in order.
  let chain = Promise.resolve();
  const run = (fn) => {
    chain = chain.then(fn).catch((err) => say(`Failed: ${err.message}`, true));
    return chain;
  };

  const ACTIONS = {
    j: () => go(1),
    k: () => go(-1),
    g: () => save({ label: "golden" }, true),
    w: () => save({ label: "wrong" }, true),
    s: () => save({ label: "skip" }, true),
    f: openFix,
    n: openNote,
    "?": () => help(true),
  };
  [1, 2, 3, 4, 5].forEach((n) => { ACTIONS[String(n)] = () => save({ rating: n }, false); });

  function act(key) {
    const fn = ACTIONS[key];
    if (!fn) return false;
    run(fn);
    return true;
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("textarea, input, select")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (!$("review-help").hidden) {
      if (ev.key === "Escape" || ev.key === "?") { ev.preventDefault(); help(false); }
      return;
    }
    const key = { ArrowRight: "j", ArrowLeft: "k" }[ev.key] || ev.key;
    if (act(key)) ev.preventDefault();
  });

  $("fix-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      const value = ev.target.value;
      if (!value.trim()) { say("The corrected answer is empty.", true); return; }
      run(() => save({ label: "fixed", fixed_answer: value }, true));
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      closeEditors();
    }
  });

  $("note-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      run(() => save({ note: ev.target.value.trim() || null }, false));
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      closeEditors();
    }
  });

  document.querySelectorAll(".review-actions [data-key]").forEach((btn) => {
    btn.addEventListener("click", () => act(btn.dataset.key));
  });
  $("help-button").addEventListener("click", () => help(true));
  $("help-close").addEventListener("click", () => help(false));
  $("review-help").addEventListener("click", (ev) => { if (ev.target === ev.currentTarget) help(false); });

  const choose = () => {
    state.filter = $("review-filter").value;
    state.order = $("review-order").value;
    const q = new URLSearchParams({ filter: state.filter, order: state.order });
    window.history.replaceState(null, "", `?${q}`);
    run(reload);
  };
  $("review-filter").addEventListener("change", choose);
  $("review-order").addEventListener("change", choose);

  run(reload);
})();
