// Helpers shared by sse.mjs and ws.mjs: bounded waits, the bench server's
// /stats and its two ways of publishing, and a subscription recorder.

import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';

/** Every wait fails the test after this long. */
export const TIMEOUT_MS = 10_000;

/** A failed check: printed as `FAIL: <message>` by {@link main}. */
export class CheckError extends Error {}

export function fail(message) {
  throw new CheckError(message);
}

export function assertEqual(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** A topic no other run or check uses. */
export function uniqueTopic(label) {
  return `node-${label}-${randomUUID()}`;
}

/** `promise`, or a {@link CheckError} naming `what` after `ms`. */
export async function withTimeout(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckError(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` until it returns a truthy value; fails after {@link TIMEOUT_MS}. */
export async function until(probe, what) {
  const deadline = Date.now() + TIMEOUT_MS;
  let last;
  for (;;) {
    last = await probe();
    if (last.ok) return last.value;
    if (Date.now() > deadline) {
      fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what} (last seen: ${JSON.stringify(last.value)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A response's status, headers and body, for failure messages. */
export async function describeResponse(res) {
  const headers = [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('; ');
  let body;
  try {
    body = await res.text();
  } catch (err) {
    body = `<unreadable: ${err}>`;
  }
  return `${res.status} ${res.statusText} [${headers}] ${body}`;
}

/** The bench server's `GET /stats`: `{connections, subscriptions}`. */
export async function stats(httpBase) {
  const res = await withTimeout(fetch(`${httpBase}/stats`), 'GET /stats');
  if (res.status !== 200) fail(`GET /stats answered ${await describeResponse(res)}`);
  const body = await res.json();
  if (typeof body.subscriptions !== 'number') {
    fail(`GET /stats has no numeric "subscriptions": ${JSON.stringify(body)}`);
  }
  return body;
}

/** Waits until the server counts at least `atLeast` subscriptions; returns the count. */
export function subscriptionsAtLeast(httpBase, atLeast, what) {
  return until(async () => {
    const { subscriptions } = await stats(httpBase);
    return { ok: subscriptions >= atLeast, value: subscriptions };
  }, `the server to count >= ${atLeast} subscriptions (${what})`);
}

/** Waits until the server counts at most `atMost` subscriptions; returns the count. */
export function subscriptionsAtMost(httpBase, atMost, what) {
  return until(async () => {
    const { subscriptions } = await stats(httpBase);
    return { ok: subscriptions <= atMost, value: subscriptions };
  }, `the server to count <= ${atMost} subscriptions (${what})`);
}

/**
 * Runs `body(baseline)`, which opens subscriptions and closes them before it
 * returns (or throws), then waits until the server counts no more
 * subscriptions than `baseline`, its count before. It waits after a failed
 * `body` too, so that the next check starts from a settled count; the first
 * failure is the one reported.
 */
export async function closesItsSubscriptions(httpBase, what, body) {
  const { subscriptions: baseline } = await stats(httpBase);
  let failure = null;
  try {
    await body(baseline);
  } catch (err) {
    failure = err;
  }
  try {
    await subscriptionsAtMost(httpBase, baseline, `${what} to end once disposed`);
  } catch (err) {
    if (!failure) throw err;
    failure.message += `; besides, ${err.message}`;
  }
  if (failure) throw failure;
}

/** Asserts a result is `{data: expected}` with no errors. */
export function assertData(result, expected, what) {
  if (result?.errors !== undefined || !isDeepStrictEqual(result?.data, expected)) {
    fail(`${what}: expected {"data":${JSON.stringify(expected)}}, got ${JSON.stringify(result)}`);
  }
}

/**
 * Asserts `results` are `{"data":{"ticks":{"seq":first}}}`, `first + 1`, ...
 * in order; the message lists the sequence numbers received.
 */
export function assertTicks(results, first, what) {
  results.forEach((result, i) => {
    if (result?.errors !== undefined || !isDeepStrictEqual(result?.data, { ticks: { seq: first + i } })) {
      const seqs = results.map((r) => r?.data?.ticks?.seq ?? JSON.stringify(r));
      fail(
        `${what}: result ${i} should be {"data":{"ticks":{"seq":${first + i}}}}, got ${JSON.stringify(result)} ` +
          `(sequence received: ${seqs.join(',')})`,
      );
    }
  });
}

/** Publishes `count` ticks on `topic` through `mutation { publish }` over HTTP. */
export async function publishByMutation(httpBase, topic, count) {
  const res = await withTimeout(
    fetch(`${httpBase}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({
        query: 'mutation Publish($topic: String!, $count: Int!) { publish(topic: $topic, count: $count) }',
        variables: { topic, count },
      }),
    }),
    'the publish mutation over HTTP',
  );
  const text = await res.clone().text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (res.status !== 200 || !isDeepStrictEqual(body, { data: { publish: true } })) {
    fail(
      `POST /graphql mutation publish(topic, count: ${count}) expected 200 {"data":{"publish":true}}, ` +
        `got ${await describeResponse(res)}`,
    );
  }
}

/** Publishes `count` ticks on `topic` through the contract's `POST /publish`. */
export async function publishByEndpoint(httpBase, topic, count) {
  const res = await withTimeout(
    fetch(`${httpBase}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ topic, count, payloadBytes: 8, intervalUs: 0 }),
    }),
    'POST /publish',
  );
  if (res.status !== 202) fail(`POST /publish expected 202, got ${await describeResponse(res)}`);
  await res.body?.cancel();
}

/**
 * Records what a client's sink receives: `results`, and whether it completed
 * or errored. `waitFor(n)` resolves once `n` results arrived, and fails at
 * once if the stream errors or completes before that.
 */
export class Recorder {
  constructor(what) {
    this.what = what;
    this.results = [];
    this.completed = false;
    this.error = null;
    this.waiters = [];
  }

  /** The sink to hand to a client's `subscribe`. */
  get sink() {
    return {
      next: (result) => {
        this.results.push(result);
        this.wake();
      },
      error: (err) => {
        this.error = err;
        this.wake();
      },
      complete: () => {
        this.completed = true;
        this.wake();
      },
    };
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  describeError() {
    const err = this.error;
    if (err instanceof Error) return err.message;
    if (err && typeof err.status === 'number') return `HTTP ${err.status} ${err.statusText}`;
    // A close event of a WebSocket, or a list of GraphQL errors.
    if (err && typeof err.code === 'number') return `close ${err.code} ${err.reason}`;
    return JSON.stringify(err);
  }

  /** Waits until `n` results arrived; returns them. */
  async waitFor(n) {
    const wait = async () => {
      while (this.results.length < n) {
        if (this.error) {
          fail(`${this.what}: the stream failed after ${this.results.length} result(s): ${this.describeError()}; ` +
            `results: ${JSON.stringify(this.results)}`);
        }
        if (this.completed) {
          fail(`${this.what}: the stream completed after ${this.results.length} of ${n} result(s): ` +
            JSON.stringify(this.results));
        }
        await new Promise((resolve) => this.waiters.push(resolve));
      }
      return this.results.slice(0, n);
    };
    try {
      return await withTimeout(wait(), `${n} result(s) of ${this.what}`);
    } catch (err) {
      if (err instanceof CheckError && !err.message.includes('results:')) {
        err.message += `; received so far: ${JSON.stringify(this.results)}`;
      }
      throw err;
    }
  }

  /** Waits until the stream completes; fails if it errors. */
  async waitForComplete() {
    const wait = async () => {
      while (!this.completed) {
        if (this.error) fail(`${this.what}: the stream failed: ${this.describeError()}`);
        await new Promise((resolve) => this.waiters.push(resolve));
      }
    };
    await withTimeout(wait(), `the completion of ${this.what} (results: ${JSON.stringify(this.results)})`);
  }
}

/**
 * Runs each `[name, check]` in turn, printing `ok name (ms)` or
 * `FAIL name: message`; exits 1 if any failed (the rest still run), 0 if none.
 */
export async function main(title, checks) {
  const started = Date.now();
  let failed = 0;
  for (const [name, check] of checks) {
    const t0 = Date.now();
    try {
      await check();
      console.log(`ok     ${name} (${Date.now() - t0} ms)`);
    } catch (err) {
      failed++;
      const message = err instanceof CheckError ? err.message : (err?.stack ?? String(err));
      console.log(`FAIL   ${name}: ${message}`);
    }
  }
  const total = checks.length;
  if (failed > 0) {
    console.error(`FAIL: ${title}: ${failed} of ${total} checks failed (${Date.now() - started} ms)`);
    process.exit(1);
  }
  console.log(`PASS: ${title}: ${total} checks (${Date.now() - started} ms)`);
  // Clients may hold sockets open (keep-alive, retries): do not wait for them.
  process.exit(0);
}
