// Benchmarks page: the history chart (an inline SVG bar chart of each finished
// benchmark's output tokens per second, from the JSON the page embeds) and the form that
// queues a new benchmark. Uses barChart, postJSON and say from app.js.
"use strict";

function drawBenchmarks(el, runs) {
  const day = (ts) => new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ");
  const bars = runs.map((r) => ({
    value: r.output_tokens_per_second,
    title: `${r.model} ${day(r.created_at)}: ${r.output_tokens_per_second.toFixed(1)} output tok/s, ${(r.requests_per_second || 0).toFixed(2)} req/s`,
  }));
  const first = day(runs[0].created_at), last = runs[runs.length - 1];
  const max = barChart(el, bars, first, day(last.created_at), { pad: 40, maxBarWidth: 60 });
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
