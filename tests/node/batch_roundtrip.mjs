// Upload -> create -> poll -> download with the official openai Node SDK against a running
// batch server: a chat, a /v1/responses, an embeddings and a moderations batch, and a
// chat batch cancelled at once (its unfinished lines in the error file).
// Usage: node batch_roundtrip.mjs BASE_URL   (BASE_URL ends in /v1). Exits non-zero on the
// first failed assertion; tests/test_node_sdk.py runs it.
import assert from "node:assert/strict";
import OpenAI, { toFile } from "openai";

const CHAT_MODEL = "smollm2-135m-instruct";
const EMBED_MODEL = "all-minilm-l6-v2";
const MODERATION_MODEL = "toxic-comment-classifier";
const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "test", maxRetries: 0 });

function jsonl(lines) {
  return lines.map((line) => JSON.stringify(line) + "\n").join("");
}

function line(customId, url, body) {
  return { custom_id: customId, method: "POST", url, body };
}

async function start(name, endpoint, lines) {
  const file = await client.files.create({
    file: await toFile(Buffer.from(jsonl(lines)), `${name}.jsonl`),
    purpose: "batch",
  });
  assert.equal(file.object, "file");
  assert.match(file.id, /^file-/);
  assert.equal(file.purpose, "batch");
  assert.equal(file.filename, `${name}.jsonl`);
  assert.equal(file.bytes, Buffer.byteLength(jsonl(lines)));
  const batch = await client.batches.create({
    input_file_id: file.id,
    endpoint,
    completion_window: "24h",
    metadata: { sdk: "node", flow: name },
  });
  assert.equal(batch.object, "batch");
  assert.match(batch.id, /^batch_/);
  assert.equal(batch.endpoint, endpoint);
  assert.equal(batch.input_file_id, file.id);
  assert.deepEqual(batch.metadata, { sdk: "node", flow: name });
  return batch;
}

async function settle(batch, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let current = batch;
  while (!TERMINAL.has(current.status)) {
    assert.ok(Date.now() < deadline, `batch ${batch.id} still ${current.status}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
    current = await client.batches.retrieve(batch.id);
  }
  return current;
}

async function finish(batch, timeoutMs) {
  const current = await settle(batch, timeoutMs);
  assert.equal(current.status, "completed", JSON.stringify(current));
  assert.ok(current.completed_at >= current.created_at);
  return current;
}

async function download(fileId) {
  if (fileId == null) return new Map();
  const response = await client.files.content(fileId);
  const text = await response.text();
  const rows = text
    .split("\n")
    .filter((x) => x.trim())
    .map((x) => JSON.parse(x));
  return new Map(rows.map((row) => [row.custom_id, row]));
}

function ok(row) {
  assert.ok(row, "missing output line");
  assert.equal(row.error, null);
  assert.match(row.id, /^batch_req_/);
  assert.equal(row.response.status_code, 200, JSON.stringify(row));
  return row.response.body;
}

async function chat() {
  const lines = ["Say hi.", "Name a colour."].map((content, i) =>
    line(`chat-${i}`, "/v1/chat/completions", {
      model: CHAT_MODEL,
      max_tokens: 8,
      temperature: 0,
      messages: [{ role: "user", content }],
    }),
  );
  const batch = await finish(await start("chat", "/v1/chat/completions", lines), 120_000);
  assert.deepEqual(
    [batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed],
    [2, 2, 0],
  );
  const out = await download(batch.output_file_id);
  assert.deepEqual([...out.keys()].sort(), ["chat-0", "chat-1"]);
  for (const row of out.values()) {
    const body = ok(row);
    assert.equal(body.object, "chat.completion");
    assert.match(body.id, /^chatcmpl-/);
    assert.equal(body.model, CHAT_MODEL);
    const [choice] = body.choices;
    assert.equal(choice.message.role, "assistant");
    assert.ok(choice.message.content.trim().length > 0);
    assert.ok(["stop", "length"].includes(choice.finish_reason));
    assert.ok(body.usage.completion_tokens > 0 && body.usage.completion_tokens <= 8);
    assert.equal(
      body.usage.total_tokens,
      body.usage.prompt_tokens + body.usage.completion_tokens,
    );
  }
  // the output file is an ordinary file: listed and retrievable with its purpose
  const meta = await client.files.retrieve(batch.output_file_id);
  assert.equal(meta.purpose, "batch_output");
  const ids = [];
  for await (const b of client.batches.list({ limit: 2 })) ids.push(b.id);
  assert.ok(ids.length > 0);
  return "chat";
}

async function responses() {
  const lines = [
    line("resp-ok", "/v1/responses", {
      model: CHAT_MODEL,
      input: "Say hello.",
      max_output_tokens: 16,
      temperature: 0,
    }),
    // an unsupported parameter fails this line alone, into the error file
    line("resp-bad", "/v1/responses", { model: CHAT_MODEL, input: "Hi", background: true }),
  ];
  const batch = await finish(await start("responses", "/v1/responses", lines), 120_000);
  assert.deepEqual([batch.request_counts.completed, batch.request_counts.failed], [1, 1]);
  const body = ok((await download(batch.output_file_id)).get("resp-ok"));
  assert.equal(body.object, "response");
  assert.match(body.id, /^resp_/);
  assert.ok(["completed", "incomplete"].includes(body.status));
  const message = body.output.find((item) => item.type === "message");
  assert.equal(message.role, "assistant");
  assert.equal(message.content[0].type, "output_text");
  assert.ok(message.content[0].text.length > 0);
  assert.ok(body.usage.output_tokens > 0 && body.usage.output_tokens <= 16);
  const bad = (await download(batch.error_file_id)).get("resp-bad");
  assert.equal(bad.response.status_code, 400);
  assert.equal(bad.response.body.error.param, "background");
  assert.equal(bad.response.body.error.type, "invalid_request_error");
  return "responses";
}

async function embeddings() {
  const lines = [
    line("emb-one", "/v1/embeddings", { model: EMBED_MODEL, input: "The sea is blue." }),
    line("emb-two", "/v1/embeddings", { model: EMBED_MODEL, input: ["Hello", "world"] }),
  ];
  const batch = await finish(await start("embeddings", "/v1/embeddings", lines), 400_000);
  assert.equal(batch.request_counts.completed, 2);
  const out = await download(batch.output_file_id);
  const one = ok(out.get("emb-one"));
  const two = ok(out.get("emb-two"));
  assert.equal(one.object, "list");
  assert.equal(one.model, EMBED_MODEL);
  assert.equal(one.data.length, 1);
  assert.deepEqual(
    two.data.map((d) => d.index),
    [0, 1],
  );
  for (const item of [...one.data, ...two.data]) {
    assert.equal(item.object, "embedding");
    assert.equal(item.embedding.length, 384);
    const norm = Math.sqrt(item.embedding.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-3, `norm ${norm}`);
  }
  assert.ok(one.usage.prompt_tokens > 0);
  return "embeddings";
}

async function cancel() {
  const lines = Array.from({ length: 12 }, (_, i) =>
    line(`long-${i}`, "/v1/chat/completions", {
      model: CHAT_MODEL,
      max_tokens: 64,
      messages: [{ role: "user", content: "Write a long story." }],
    }),
  );
  const created = await start("cancel", "/v1/chat/completions", lines);
  const cancelling = await client.batches.cancel(created.id);
  assert.ok(["cancelling", "cancelled"].includes(cancelling.status), cancelling.status);
  const batch = await settle(created, 120_000);
  assert.equal(batch.status, "cancelled");
  assert.ok(batch.cancelled_at >= batch.cancelling_at);
  const done = batch.request_counts.completed;
  assert.ok(done < 12, `${done} of 12 ran despite the cancel`);
  // unfinished requests are batch_cancelled lines in the error file; a batch cancelled
  // while still validating has no requests at all
  const total = batch.request_counts.total;
  assert.ok([0, 12].includes(total), `total ${total}`);
  const errors = await download(batch.error_file_id);
  assert.equal(errors.size + done, total);
  for (const row of errors.values()) assert.equal(row.error.code, "batch_cancelled");
  // the input file can be deleted once the batch is over
  const deleted = await client.files.delete(created.input_file_id);
  assert.deepEqual([deleted.id, deleted.deleted], [created.input_file_id, true]);
  return "cancel";
}

async function moderations() {
  const lines = [
    line("mod", "/v1/moderations", {
      model: MODERATION_MODEL,
      input: ["Thank you, that was kind.", "You are a stupid worthless idiot."],
    }),
  ];
  const batch = await finish(await start("moderations", "/v1/moderations", lines), 120_000);
  assert.equal(batch.request_counts.completed, 1);
  const body = ok((await download(batch.output_file_id)).get("mod"));
  assert.match(body.id, /^modr-/);
  assert.equal(body.model, MODERATION_MODEL);
  const [kind, rude] = body.results;
  assert.equal(kind.flagged, false);
  assert.equal(rude.flagged, true);
  assert.equal(rude.categories.harassment, true);
  assert.ok(rude.category_scores.harassment > 0.5);
  assert.deepEqual(rude.category_applied_input_types.harassment, ["text"]);
  assert.equal(Object.keys(rude.categories).length, 13);
  return "moderations";
}

const flows = { chat, responses, embeddings, moderations, cancel };
const chosen = process.argv.slice(3);
const names = chosen.length ? chosen : Object.keys(flows);
const done = await Promise.all(names.map((name) => flows[name]()));
console.log(`node sdk ok: ${done.join(", ")}`);
