// The comparison page: marks the words of each answer that differ from the first model's,
// moves between rows with the keyboard and stores picks through the comparisons API
// (PUT/DELETE /v1/comparisons/{id}/picks/{custom_id}, with the page's login cookie).
"use strict";

(() => {
  const section = document.getElementById("rows-section");
  if (!section) return;
  const id = section.dataset.comparisonId;
  const models = section.dataset.models.split(",");
  const rows = [...document.querySelectorAll("#rows-table tbody tr[data-index]")];
  let picked = Number(section.dataset.picked);
  const total = Number(section.dataset.total);
  let current = -1;

  const announce = (text) => {
    const live = document.getElementById("live-status");
    if (live) live.textContent = text;
  };

  // -- differences: word-level, against the first model's answer --------------------------
  const words = (text) => text.split(/(\s+)/).filter((w) => w.length);

  // Which words of `b` are not in the longest common subsequence of `a` and `b`.
  function changed(a, b) {
    const n = a.length, m = b.length;
    if (n * m > 250000) return b.map((w, i) => w !== a[i]);  // too long: compare by position
    const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    const out = new Array(m).fill(true);
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) { out[j] = false; i++; j++; }
      else if (lcs[i + 1][j] >= lcs[i][j + 1]) i++;
      else j++;
    }
    return out;
  }

  function mark(cell, flags, parts) {
    const box = cell.querySelector(".text");
    box.replaceChildren();
    parts.forEach((w, k) => {
      if (flags[k] && w.trim()) {
        const m = document.createElement("mark");
        m.textContent = w;
        box.appendChild(m);
      } else {
        box.appendChild(document.createTextNode(w));
      }
    });
  }

  function highlight(row) {
    const cells = [...row.querySelectorAll("td.answer")];
    const first = cells[0] && cells[0].querySelector(".text");
    if (!first) return;
    const base = words(first.textContent);
    cells.slice(1).forEach((cell) => {
      const box = cell.querySelector(".text");
      if (!box) return;
      if (box.textContent.trim() === first.textContent.trim()) return;
      cell.classList.add("differs");
      const parts = words(box.textContent);
      mark(cell, changed(base, parts), parts);
    });
  }

  // -- moving and picking ---------------------------------------------------------------------
  function move(to) {
    if (!rows.length) return;
    const next = Math.max(0, Math.min(rows.length - 1, to));
    if (current >= 0) rows[current].classList.remove("current");
    current = next;
    const row = rows[current];
    row.classList.add("current");
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  function showPick(row, model) {
    const cell = row.querySelector("td.pick");
    const before = cell.dataset.pick;
    cell.dataset.pick = model === undefined ? "" : (model === null ? "tie" : model);
    cell.textContent = model === undefined ? "–" : (model === null ? "tie" : model);
    row.querySelectorAll("td.answer").forEach((td) => {
      td.classList.toggle("picked", model !== undefined && td.dataset.model === model);
    });
    const had = before !== "", has = model !== undefined;
    picked += (has ? 1 : 0) - (had ? 1 : 0);
    document.getElementById("pick-progress").textContent = `picked ${picked} of ${total}`;
    const adjust = (m, by) => {
      const counter = document.querySelector(`[data-picked-count="${CSS.escape(m)}"]`);
      if (counter) counter.textContent = String(Number(counter.textContent) + by);
    };
    if (had && before !== "tie") adjust(before, -1);
    if (has && model !== null) adjust(model, 1);
  }

  async function send(row, method, body) {
    const url = `/v1/comparisons/${id}/picks/${encodeURIComponent(row.dataset.customId)}`;
    const resp = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
    return data;
  }

  async function pick(model) {
    if (current < 0) move(0);
    const row = rows[current];
    if (!row || !row.dataset.customId) return;
    try {
      await send(row, "PUT", { model });
      showPick(row, model);
      announce(`${row.dataset.customId}: ${model === null ? "tie" : model}`);
      move(current + 1);
    } catch (err) { announce(`Pick not stored: ${err.message}`); }
  }

  async function undo() {
    if (current < 0) return;
    const row = rows[current];
    if (!row.dataset.customId || row.querySelector("td.pick").dataset.pick === "") return;
    try {
      await send(row, "DELETE");
      showPick(row, undefined);
      announce(`${row.dataset.customId}: pick removed`);
    } catch (err) { announce(`Pick not removed: ${err.message}`); }
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target.closest && ev.target.closest("input, textarea, select, button, [contenteditable]")) return;
    const key = ev.key;
    if (key === "j" || key === "ArrowDown") { ev.preventDefault(); move(current + 1); }
    else if (key === "k" || key === "ArrowUp") { ev.preventDefault(); move(current - 1); }
    else if (key === "0") { ev.preventDefault(); pick(null); }
    else if (/^[1-9]$/.test(key) && Number(key) <= models.length) { ev.preventDefault(); pick(models[Number(key) - 1]); }
    else if (key === "u") { ev.preventDefault(); undo(); }
  });
  rows.forEach((row, k) => {
    row.addEventListener("click", () => move(k));
    highlight(row);
    const cell = row.querySelector("td.pick");
    if (cell.dataset.pick && cell.dataset.pick !== "tie") showPickedCell(row, cell.dataset.pick);
  });

  // While the batches run: their status and counts every 3 s (one cheap batch read each);
  // the page reloads with all answers once every batch has ended, unless you are picking.
  const status = document.getElementById("comparison-status");
  if (status && status.textContent === "in_progress") {
    const ids = status.dataset.batchIds.split(",");
    const ended = ["completed", "failed", "expired", "cancelled"];
    const timer = setInterval(async () => {
      try {
        const batches = await Promise.all(ids.map(async (b) => {
          const resp = await fetch(`/v1/batches/${b}`, { headers: { Accept: "application/json" } });
          if (!resp.ok) throw new Error(`${b}: ${resp.status}`);
          return resp.json();
        }));
        batches.forEach((b) => {
          const badge = document.querySelector(`[data-run-status="${b.id}"]`);
          if (badge) { badge.textContent = b.status; badge.className = `badge state-${b.status}`; }
          const counts = document.querySelector(`[data-run-counts="${b.id}"]`);
          const c = b.request_counts;
          if (counts) counts.textContent = `${c.completed + c.failed}/${c.total}`;
        });
        if (batches.every((b) => ended.includes(b.status))) {
          clearInterval(timer);
          if (current < 0) window.location.reload();
          else announce("Every model has finished: reload the page for all answers.");
        }
      } catch (err) { announce(`Update failed: ${err.message}`); }
    }, 3000);
  }

  function showPickedCell(row, model) {
    row.querySelectorAll("td.answer").forEach((td) => td.classList.toggle("picked", td.dataset.model === model));
  }
})();
