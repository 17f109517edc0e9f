// Benchmarks page: the history chart (an inline SVG bar chart of each finished
// benchmark's output tokens per second, from the JSON the page embeds) and the form that
// queues a new benchmark. Uses postJSON and say from app.js.
"use strict";

function drawBenchmarks(el, runs) {
  const w = 720, h = 200, pad = 40;
  const values = runs.map((r) => r.output_tokens_per_second);
  const max = Math.max(1, ...values);
  const bw = (w - pad) / Math.max(values.length, 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h + 20}`);
  svg.setAttribute("aria-hidden", "true");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    svg.appendChild(node);
    return node;
  };
  add("line", { x1: pad, y1: h, x2: w, y2: h, class: "axis" });
  add("line", { x1: pad, y1: 0, x2: pad, y2: h, class: "axis" });
  add("text", { x: 0, y: 10 }, max.toFixed(0));
  add("text", { x: 0, y: h }, "0");
  const day = (ts) => new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ");
  add("text", { x: pad, y: h + 15 }, day(runs[0].created_at));
  add("text", { x: w - 110, y: h + 15 }, day(runs[runs.length - 1].created_at));
  runs.forEach((r, i) => {
    const bh = (r.output_tokens_per_second / max) * (h - 4);
    const bar = add("rect", { x: pad + i * bw + 1, y: h - bh, width: Math.max(Math.min(bw - 2, 60), 1), height: bh, class: "bar" });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${r.model} ${day(r.created_at)}: ${r.output_tokens_per_second.toFixed(1)} output tok/s, ${(r.requests_per_second || 0).toFixed(2)} req/s`;
    bar.appendChild(title);
  });
  el.replaceChildren(svg);
  const last = runs[runs.length - 1];
  document.getElementById("benchmark-summary").textContent =
    `Output tokens per second of engine time of each finished benchmark, oldest first (${runs.length}). ` +
    `Latest: ${last.model}, ${last.output_tokens_per_second.toFixed(1)} tok/s; best: ${max.toFixed(1)} tok/s.`;
}

function benchmarksPage() {
  const runs = JSON.parse(document.getElementById("benchmark-data").textContent);
  if (runs.length) drawBenchmarks(document.getElementById("benchmark-chart"), runs);
  const form = document.getElementById("benchmark-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      model: form.elements.model.value,
      requests: Number(form.elements.requests.value),
      max_tokens: Number(form.elements.max_tokens.value),
    };
    try {
      const bench = await postJSON("/v1/benchmarks", body);
      say(`Benchmark ${bench.id} queued`);
      window.location.href = `/ui/batches/${bench.batch_id}`;
    } catch (err) {
      say(`Could not start the benchmark: ${err.message}`);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "benchmarks") benchmarksPage();
});
