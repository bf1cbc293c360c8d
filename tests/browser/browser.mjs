// GraphiQL and the service board in a real browser: headless Chromium
// (Debian's `chromium`) driven by playwright-core, against one running
// service desk. Run by `cargo xtask browser` (and `cargo xtask ci`), which
// starts the Rust and the Python service desks:
//
//   node browser.mjs <label> <base url> <GraphiQL path> <HTTP GraphQL path> [screenshot dir]
//
// Checks: GraphiQL loads (schema by introspection), runs a subscription over
// graphql-transport-ws and shows the events a mutation publishes; the board
// shows a status change within a second of the mutation, and files a request
// through its form; no request leaves the server's origin; the console has
// no errors. Every wait is on an observable condition, bounded by TIMEOUT.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [label, base, graphiqlPath, graphqlPath, screenshots] = process.argv.slice(2);
if (!graphqlPath) {
  console.error("usage: node browser.mjs <label> <base url> <GraphiQL path> <HTTP GraphQL path> [screenshot dir]");
  process.exit(2);
}
const TIMEOUT = 15_000;
/** The bound: the board shows a published change within a second. */
const BOARD_LATENCY_MS = 1_000;
const origin = new URL(base).origin;
const wsOrigin = origin.replace(/^http/, "ws");

async function graphql(query, variables = {}) {
  const response = await fetch(`${base}${graphqlPath}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  const result = await response.json();
  assert.equal(result.errors, undefined, JSON.stringify(result.errors));
  return result.data;
}

async function subscriptions() {
  const stats = await (await fetch(`${base}/stats`)).json();
  return stats.subscriptions;
}

async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const changeStatus = (id, status) =>
  graphql(
    "mutation($id: ID!, $status: ServiceStatus!) { changeServiceStatus(id: $id, status: $status) { current } }",
    { id, status },
  );

/** Records what a page must not do: leave the origin, log an error. */
function guard(page) {
  const problems = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.protocol === "data:" || url.protocol === "blob:") return;
    if (url.origin !== origin) problems.push(`request to another origin: ${request.url()}`);
  });
  page.on("websocket", (socket) => {
    if (new URL(socket.url()).origin !== wsOrigin) problems.push(`WebSocket to another origin: ${socket.url()}`);
  });
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`${response.status()} for ${response.url()}`);
  });
  return problems;
}

async function services() {
  let { services: list } = await graphql("{ services { id name status } }");
  if (list.length === 0) {
    for (const name of ["Email", "VPN", "Printing"]) {
      await graphql("mutation($name: String!) { createService(name: $name) { id } }", { name });
    }
    ({ services: list } = await graphql("{ services { id name status } }"));
  }
  return list;
}

async function graphiql(browser, service) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  const problems = guard(page);
  const introspected = page.waitForResponse(
    (response) => response.request().method() === "POST" && /__schema/.test(response.request().postData() ?? ""),
    { timeout: TIMEOUT },
  );
  await page.goto(`${base}${graphiqlPath}`);
  const schema = await (await introspected).json();
  assert.ok(schema.data, JSON.stringify(schema).slice(0, 500));
  assert.ok(
    schema.data.__schema.types.some((type) => type.name === "ServiceStatusChange"),
    "the schema came from introspection",
  );
  const editor = page.locator(".graphiql-query-editor .monaco-editor").first();
  await editor.waitFor({ timeout: TIMEOUT });
  await editor.click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.press("Delete");
  // Inserted text, not key presses (Monaco would close every bracket
  // again), on one line (Monaco indents after a newline); then GraphiQL's
  // prettify lays it out.
  await page.keyboard.insertText(
    `subscription Watch { serviceStatusChanged(serviceId: "${service.id}") { serviceId current } }`,
  );
  await page.getByRole("button", { name: /prettify/i }).click();
  await page.locator(".graphiql-query-editor", { hasText: "current" }).waitFor({ timeout: TIMEOUT });
  const before = await subscriptions();
  await page.locator(".graphiql-execute-button").click();
  await until("the GraphiQL subscription on the server", async () => (await subscriptions()) > before);
  const response = page.locator(".graphiql-response");
  for (const status of ["DEGRADED", "OPERATIONAL"]) {
    await changeStatus(service.id, status);
    await response.getByText(`"${status}"`).waitFor({ timeout: TIMEOUT });
  }
  if (screenshots) await page.screenshot({ path: join(screenshots, "graphiql-subscription.png") });

  // Stop it (the server sees the subscription end), then the same over SSE,
  // with a header set in GraphiQL's Headers pane: it reaches the server.
  await page.locator(".graphiql-execute-button").click();
  await until("the WebSocket subscription to end", async () => (await subscriptions()) === before);
  await page.selectOption("#subs-transport", "sse");
  await page.getByRole("button", { name: "Headers" }).click();
  const headersEditor = page.locator(".graphiql-editor-tool .monaco-editor:visible").first();
  await headersEditor.click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText('{"x-subs-probe": "graphiql"}');
  const stream = page.waitForRequest(
    (request) => request.method() === "POST" && request.headers().accept === "text/event-stream",
    { timeout: TIMEOUT },
  );
  await page.locator(".graphiql-execute-button").click();
  assert.equal((await stream).headers()["x-subs-probe"], "graphiql", "the user's header is sent");
  await until("the SSE subscription on the server", async () => (await subscriptions()) > before);
  await changeStatus(service.id, "DEGRADED");
  await response.getByText('"DEGRADED"').waitFor({ timeout: TIMEOUT });
  await changeStatus(service.id, "OPERATIONAL");
  await response.getByText('"OPERATIONAL"').waitFor({ timeout: TIMEOUT });
  await page.locator(".graphiql-execute-button").click();
  await until("the SSE subscription to end", async () => (await subscriptions()) === before);
  await page.close();
  assert.deepEqual(problems, [], "GraphiQL");
}

async function board(browser, service) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
  const problems = guard(page);
  const before = await subscriptions();
  await page.goto(`${base}/`);
  await page.locator('body[data-ready="true"]').waitFor({ timeout: TIMEOUT });
  // The board's three subscriptions are running.
  await until("the board's subscriptions", async () => (await subscriptions()) >= before + 3);
  const row = page.locator(`tr[data-service="${service.id}"]`);
  await row.waitFor({ timeout: TIMEOUT });
  const started = performance.now();
  await changeStatus(service.id, "DEGRADED");
  await page.locator(`tr[data-service="${service.id}"][data-status="DEGRADED"]`).waitFor({ timeout: TIMEOUT });
  const elapsed = performance.now() - started;
  console.log(`${label}: the board showed the status change ${elapsed.toFixed(0)} ms after the mutation was sent`);
  assert.ok(elapsed < BOARD_LATENCY_MS, `the board took ${elapsed.toFixed(0)} ms`);
  await page.locator("#events li", { hasText: "→ DEGRADED" }).first().waitFor({ timeout: TIMEOUT });

  await page.selectOption("#request-service", service.id);
  await page.fill("#request-title", "The printer is on fire");
  await page.click('#request-form button[type="submit"]');
  await page.locator("#form-result", { hasText: "Filed" }).waitFor({ timeout: TIMEOUT });
  await page.locator("#events li", { hasText: "The printer is on fire" }).waitFor({ timeout: TIMEOUT });
  await changeStatus(service.id, "OPERATIONAL");
  await page.locator(`tr[data-service="${service.id}"][data-status="OPERATIONAL"]`).waitFor({ timeout: TIMEOUT });
  if (screenshots) await page.screenshot({ path: join(screenshots, "service-board.png") });
  await page.close();
  assert.deepEqual(problems, [], "service board");
}

if (screenshots) mkdirSync(screenshots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // Chromium's sandbox needs user namespaces, which containers (and root) lack.
  args: ["--no-sandbox"],
});
try {
  const [service] = await services();
  await graphiql(browser, service);
  console.log(`${label}: GraphiQL ran a subscription over WebSocket, then over SSE with a header of the user's, and showed the events of the mutations`);
  await board(browser, service);
  console.log(`${label}: the service board followed the mutations and filed a request`);
} finally {
  await browser.close();
}
