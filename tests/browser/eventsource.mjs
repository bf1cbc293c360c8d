// The EventSource recipe of docs/history.md in a real browser: headless
// Chromium's own EventSource, against a bench server started with HISTORY.
// Run by `cargo xtask browser` (and `cargo xtask ci`):
//
//   node eventsource.mjs <bench server base url>
//
// The page reaches the server through a TCP proxy that this script controls,
// so the network can fail under the browser the way a phone's does: the
// proxy cuts the stream's connection and holds new ones while events are
// published. EventSource then reconnects by itself and sends the last `id:`
// it received as `Last-Event-ID`; the page must receive exactly the events
// it missed, in order, none twice, then the live ones. Every wait is on an
// observable condition, bounded by TIMEOUT.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node eventsource.mjs <bench server base url>");
  process.exit(2);
}
const TIMEOUT = 20_000;
const server = new URL(base);

async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function subscriptions() {
  const stats = await (await fetch(`${base}/stats`)).json();
  return stats.subscriptions;
}

async function publish(topic, count) {
  const response = await fetch(`${base}/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic, count, payloadBytes: 8, intervalUs: 0 }),
  });
  assert.equal(response.status, 202, "POST /publish");
  await response.body?.cancel();
}

/**
 * A TCP proxy to the bench server. `cut()` destroys every connection open
 * now (a network loss, no FIN from the server); while `held`, new
 * connections wait unconnected. `requests` keeps the head of every request
 * that went through, to see what the browser sent.
 */
function startProxy() {
  const open = new Set();
  const waiting = [];
  const requests = [];
  const proxy = {
    held: false,
    requests,
    cut() {
      for (const socket of open) socket.destroy();
      open.clear();
    },
    release() {
      proxy.held = false;
      for (const connect of waiting.splice(0)) connect();
    },
  };
  const listener = net.createServer((client) => {
    const connect = () => {
      const upstream = net.connect(Number(server.port), server.hostname);
      open.add(client).add(upstream);
      let head = "";
      client.on("data", (chunk) => {
        if (!head.includes("\r\n\r\n")) {
          head += chunk.toString("latin1");
          if (head.includes("\r\n\r\n")) requests.push(head);
        }
        upstream.write(chunk);
      });
      upstream.on("data", (chunk) => client.write(chunk));
      const end = () => {
        client.destroy();
        upstream.destroy();
        open.delete(client);
        open.delete(upstream);
      };
      client.on("close", end).on("error", end);
      upstream.on("close", end).on("error", end);
    };
    if (proxy.held) waiting.push(connect);
    else connect();
  });
  return new Promise((resolve) =>
    listener.listen(0, "127.0.0.1", () => {
      proxy.url = `http://127.0.0.1:${listener.address().port}`;
      proxy.close = () => listener.close();
      resolve(proxy);
    }),
  );
}

const proxy = await startProxy();
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, headless: true });
let failed = false;
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  // Any page of the server's origin: EventSource is same-origin here.
  await page.goto(`${proxy.url}/stats`);

  const topic = `browser-${randomUUID()}`;
  const baseline = await subscriptions();
  // The recipe, as docs/history.md shows it.
  await page.evaluate((topic) => {
    const query = `subscription { ticks(topic: ${JSON.stringify(topic)}) { seq } }`;
    window.received = [];
    const source = new EventSource("/graphql?query=" + encodeURIComponent(query));
    source.addEventListener("next", (event) =>
      window.received.push({ id: event.lastEventId, result: JSON.parse(event.data) }),
    );
  }, topic);
  const received = () => page.evaluate(() => window.received);
  const count = (n) => async () => {
    const all = await received();
    return all.length >= n && all;
  };

  await until("the subscription", async () => (await subscriptions()) === baseline + 1);
  await publish(topic, 5);
  await until("5 events", count(5));

  // The network fails under the page; events are published while it is away.
  proxy.held = true;
  proxy.cut();
  await until("the server to see the stream go", async () => (await subscriptions()) === baseline);
  const before = proxy.requests.length;
  await publish(topic, 5);
  proxy.release();

  const resumed = await until("the 5 missed events", count(10));
  const reconnect = proxy.requests.slice(before).find((head) => /^GET \/graphql\?/.test(head));
  assert.ok(reconnect, "EventSource reconnected");
  const lastEventId = /^last-event-id:\s*(.+?)\r$/im.exec(reconnect)?.[1];
  assert.equal(lastEventId, resumed[4].id, "the reconnect sends the last id received");

  await publish(topic, 1);
  const all = await until("the live event after the resume", count(11));
  const offsets = all.map(({ result }) => result.extensions?.subs?.offset);
  assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "offsets across the reconnect");
  const epochs = new Set(all.map(({ result }) => result.extensions?.subs?.epoch));
  assert.equal(epochs.size, 1, `one epoch: ${[...epochs]}`);
  for (const { id, result } of all) {
    assert.equal(id, `${result.extensions.subs.epoch}:${result.extensions.subs.offset}`, "the id is the position");
    assert.equal(result.errors, undefined, JSON.stringify(result.errors));
  }
  assert.deepEqual(pageErrors, [], "no page errors");
  console.log(`eventsource: ${all.length} events in order across a network loss, none twice (${base})`);
} catch (error) {
  failed = true;
  console.error(`eventsource: FAILED: ${error.stack ?? error}`);
} finally {
  await browser.close();
  proxy.close();
}
process.exit(failed ? 1 : 0);
