// The collection page's export buttons: POST /v1/collections/{id}/exports, then offer the
// File's download (GET /v1/files/{file_id}/content; the login's cookie authenticates both).
(function () {
  "use strict";
  const box = document.getElementById("exports");
  if (!box) return;
  const result = document.getElementById("export-result");
  box.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-format]");
    if (!button) return;
    const format = button.dataset.format;
    button.disabled = true;
    result.textContent = `Exporting ${format}…`;
    try {
      const resp = await fetch(`/v1/collections/${encodeURIComponent(box.dataset.collection)}/exports`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ format, version: Number(box.dataset.version) }),
      });
      const body = await resp.json();
      if (!resp.ok) {
        result.textContent = `Export failed: ${body.error ? body.error.message : resp.status}`;
        return;
      }
      result.textContent = "";
      const link = document.createElement("a");
      link.href = `/v1/files/${encodeURIComponent(body.file_id)}/content`;
      link.download = body.filename;
      link.className = "button";
      link.textContent = `Download ${body.filename}`;
      result.append(link, ` ${body.count} examples, ${body.bytes} bytes (${body.file_id})`);
    } catch (err) {
      result.textContent = `Export failed: ${err}`;
    } finally {
      button.disabled = false;
    }
  });
})();
