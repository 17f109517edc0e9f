// vLLM Batch Server dashboard: a little JavaScript that polls the JSON APIs and updates the
// server-rendered pages in place. No framework, no external assets.
"use strict";

const say = (text) => { document.getElementById("live-status").textContent = text; };

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(`${url}: ${resp.status}`);
  return resp.json();
}

async function postJSON(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
  return data;
}

function every(ms, fn) {
  let busy = false;
  const tick = async () => {
    if (busy || document.hidden) return;
    busy = true;
    try { await fn(); } catch (err) { say(`Update failed: ${err.message}`); } finally { busy = false; }
  };
  tick();
  return setInterval(tick, ms);
}

// Progress bars, counts, ETAs and states of queue entries, wherever they are on the page.
function applyEntry(e) {
  const done = e.request_counts.completed + e.request_counts.failed;
  document.querySelectorAll(`[data-progress="${e.id}"]`).forEach((bar) => {
    bar.max = e.request_counts.total || 1;
    bar.value = done;
  });
  const failed = e.request_counts.failed ? ` (${e.request_counts.failed} failed)` : "";
  document.querySelectorAll(`[data-counts="${e.id}"]`).forEach((el) => {
    el.textContent = `${done} / ${e.request_counts.total}${failed}`;
  });
  document.querySelectorAll(`[data-eta="${e.id}"]`).forEach((el) => { el.textContent = e.eta.text; });
  document.querySelectorAll(`[data-position="${e.id}"]`).forEach((el) => { el.textContent = e.position; });
  document.querySelectorAll(`[data-state="${e.id}"]`).forEach((el) => {
    el.textContent = e.state;
    el.className = `badge state-${e.state}`;
  });
}

// Sections re-fetched as server-rendered fragments (no focusable content inside).
function liveFragments() {
  document.querySelectorAll("[data-live]").forEach((el) => {
    every(Number(el.dataset.every || 3000), async () => {
      const resp = await fetch(el.dataset.live);
      if (!resp.ok) throw new Error(`${el.dataset.live}: ${resp.status}`);
      const html = await resp.text();
      if (html !== el.innerHTML) el.innerHTML = html;
    });
  });
}

// Cancel and re-prioritise buttons (delegated, so re-rendered rows keep working).
function actions(onChange) {
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("[data-cancel]");
    if (!btn) return;
    const id = btn.dataset.cancel;
    if (!window.confirm(`Cancel ${id}? Finished requests are kept.`)) return;
    btn.disabled = true;
    try {
      const b = await postJSON(`/v1/batches/${id}/cancel`);
      say(`${id}: ${b.status}`);
      await onChange();
    } catch (err) { say(`Cancel failed: ${err.message}`); btn.disabled = false; }
  });
  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("[data-priority-form]");
    if (!form) return;
    ev.preventDefault();
    const id = form.dataset.priorityForm;
    const priority = parseInt(form.elements.priority.value, 10);
    try {
      await postJSON(`/v1/batches/${id}/priority`, { priority });
      form.elements.priority.defaultValue = String(priority);  // no longer an unsaved edit
      say(`${id}: priority ${priority}`);
      await onChange();
    } catch (err) { say(`Priority not changed: ${err.message}`); }
  });
}

// Queue page: update rows in place; re-fetch the rows when batches join, leave or move,
// but never while the user is typing a priority (that would throw the edit away).
function queuePage() {
  const body = document.getElementById("queue-rows");
  const editing = () => [...body.querySelectorAll("input")].some(
    (input) => input === document.activeElement || input.value !== input.defaultValue,
  );
  const refresh = async () => {
    const q = await getJSON("/v1/queue");
    const order = q.data.map((e) => e.id).join(",");
    if (order !== body.dataset.order && !editing()) {
      const resp = await fetch("/ui/queue/rows");
      if (!resp.ok) throw new Error(`/ui/queue/rows: ${resp.status}`);
      const html = await resp.text();
      // the user may have started typing while the rows were on their way
      if (!editing()) {
        body.innerHTML = html;
        body.dataset.order = order;
      }
    }
    q.data.forEach(applyEntry);
  };
  // data-order comes with the server-rendered rows: no re-fetch unless the queue moves
  every(1500, refresh);
  actions(refresh);
}

// Batch page: live progress until the batch ends, then reload to show files and errors.
function batchPage() {
  const section = document.getElementById("batch-live");
  if (!section || section.dataset.liveBatch !== "yes") return;
  const id = section.dataset.batchId;
  const refresh = async () => {
    const q = await getJSON("/v1/queue");
    const entry = q.data.find((e) => e.id === id);
    if (entry) {
      applyEntry(entry);
      const status = document.querySelector(`[data-status="${id}"]`);
      if (status && status.textContent !== entry.status) {
        status.textContent = entry.status;
        status.className = `badge state-${entry.status}`;
      }
    } else {
      window.location.reload();
    }
  };
  every(1000, refresh);
  actions(refresh);
}

// An inline SVG bar chart: a bar per {value, title}, the axis labelled with the maximum
// and zero, and captions under its left and right ends. Returns the maximum.
function barChart(el, bars, left, right, { pad = 34, maxBarWidth = Infinity } = {}) {
  const w = 720, h = 200;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const bw = (w - pad) / Math.max(bars.length, 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h + 20}`);
  svg.setAttribute("aria-hidden", "true");
  const add = (tag, attrs, text, parent = svg) => {
    const node = document.createElementNS(ns, tag);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    parent.appendChild(node);
    return node;
  };
  add("line", { x1: pad, y1: h, x2: w, y2: h, class: "axis" });
  add("line", { x1: pad, y1: 0, x2: pad, y2: h, class: "axis" });
  add("text", { x: 0, y: 10 }, max.toFixed(0));
  add("text", { x: 0, y: h }, "0");
  add("text", { x: pad, y: h + 15 }, left);
  add("text", { x: w, y: h + 15, "text-anchor": "end" }, right);
  bars.forEach((b, i) => {
    const bh = (b.value / max) * (h - 4);
    const width = Math.max(Math.min(bw - 2, maxBarWidth), 1);
    const bar = add("rect", { x: pad + i * bw + 1, y: h - bh, width, height: bh, class: "bar" });
    if (b.title) add("title", {}, b.title, bar);
  });
  el.replaceChildren(svg);
  return max;
}

// Overview: the throughput chart, drawn from /v1/stats/throughput.
function drawChart(el, data) {
  const values = data.map((d) => d.output_tokens_per_second);
  const max = barChart(el, values.map((value) => ({ value })), "−60 min", "now");
  const recent = values.slice(-5);
  const avg = recent.reduce((a, b) => a + b, 0) / recent.length;
  const total = data.reduce((a, d) => a + d.requests_per_second * 60, 0);
  document.getElementById("throughput-summary").textContent =
    `Output tokens per second of all workers, per minute. Last 5 minutes: ${avg.toFixed(1)} tok/s; ` +
    `last hour: ${Math.round(total)} requests. Peak: ${max.toFixed(1)} tok/s.`;
}

function overviewPage() {
  liveFragments();
  const el = document.getElementById("throughput-chart");
  every(10000, async () => {
    const t = await getJSON(`/v1/stats/throughput?window=${el.dataset.window}&bucket=${el.dataset.bucket}`);
    drawChart(el, t.data);
  });
}

// Submit page: check the chosen file at once and show errors with line numbers.
function submitPage() {
  const form = document.getElementById("submit-form");
  const out = document.getElementById("validation");
  const check = async () => {
    if (!form.elements.file.files.length) return;
    out.textContent = "Checking the file…";
    const data = new FormData(form);
    const resp = await fetch("/ui/submit/check", { method: "POST", body: data });
    out.innerHTML = resp.ok ? await resp.text() : `<p class="error">Could not check the file (${resp.status}).</p>`;
  };
  ["change"].forEach((type) => {
    form.elements.file.addEventListener(type, check);
    form.elements.model.addEventListener(type, check);
    form.elements.endpoint.addEventListener(type, check);
  });
}

// The plugins page: enable and disable buttons (the admin API, the login's cookie).
function pluginsPage() {
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("[data-plugin-switch]");
    if (!btn) return;
    const name = btn.dataset.pluginSwitch;
    btn.disabled = true;
    try {
      const p = await postJSON(`/v1/admin/plugins/${encodeURIComponent(name)}/${btn.dataset.action}`);
      say(`${p.name}: ${p.enabled ? "enabled" : "disabled"}`);
      window.location.reload();
    } catch (err) { say(`Failed: ${err.message}`); btn.disabled = false; }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "plugins") pluginsPage();
  if (page === "overview") overviewPage();
  if (page === "queue") queuePage();
  if (page === "batches") batchPage();
  if (page === "submit") submitPage();
});
