// The resume recipe for the official graphql-ws client (docs/history.md),
// against a bench server started with HISTORY=N.
//
//   node resume.mjs ws://127.0.0.1:4000/graphql
//
// The recipe: keep the subscribe payload in a variable, and on every result
// store its position (`extensions.subs`) as `extensions.subs.resume` of that
// payload. graphql-ws re-sends the same payload object when it reconnects
// (`retryAttempts`), so the server replays what the client missed.
//
// The check: 5 ticks arrive; the socket drops (terminated, as a network
// loss); 5 more are published while the client is away; it reconnects and
// must receive exactly offsets 6..10, in order, then a live one (11). A resume
// from an unknown epoch gets HISTORY_GAP at once, then live events.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import {
  Recorder,
  assertEqual,
  closesItsSubscriptions,
  fail,
  main,
  publishByEndpoint,
  subscriptionsAtLeast,
  stats,
  uniqueTopic,
  until,
} from './lib.mjs';

const wsUrl = process.argv[2];
if (!wsUrl || !/^wss?:\/\//.test(wsUrl)) {
  console.error('usage: node resume.mjs <WebSocket url of the endpoint>');
  process.exit(2);
}
const base = new URL(wsUrl);
base.protocol = base.protocol === 'wss:' ? 'https:' : 'http:';
const httpBase = base.origin;
const QUERY = 'subscription Ticks($topic: String!) { ticks(topic: $topic) { seq } }';

/** The recipe: a subscription that resumes where it left off. */
function resumingSubscribe(client, variables, sink) {
  const payload = { query: QUERY, variables, extensions: { subs: {} } };
  return client.subscribe(payload, {
    ...sink,
    next(result) {
      const position = result.extensions?.subs;
      if (position && position.offset !== undefined) {
        payload.extensions.subs.resume = { epoch: position.epoch, offset: position.offset };
      }
      sink.next(result);
    },
  });
}

async function reconnectsWithoutLosingEvents() {
  const topic = uniqueTopic('resume');
  let socket = null;
  let release;
  const away = new Promise((resolve) => { release = resolve; });
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    retryAttempts: 5,
    shouldRetry: () => true,
    // Hold the reconnect until the test has published while away.
    retryWait: () => away,
    on: { connected: (s) => { socket = s; } },
  });
  await closesItsSubscriptions(httpBase, 'a resuming subscription', async (baseline) => {
    try {
      const recorder = new Recorder('a resuming ticks subscription');
      resumingSubscribe(client, { topic }, recorder.sink);
      await subscriptionsAtLeast(httpBase, baseline + 1, 'the subscription');
      await publishByEndpoint(httpBase, topic, 5);
      await recorder.waitFor(5);
      socket.terminate();
      await until(async () => {
        const { subscriptions } = await stats(httpBase);
        return { ok: subscriptions === baseline, value: subscriptions };
      }, 'the server to see the client go');
      // Published while the client is away (each `POST /publish` numbers its
      // seq from 0: offsets tell the events apart).
      await publishByEndpoint(httpBase, topic, 5);
      release();
      await subscriptionsAtLeast(httpBase, baseline + 1, 'the resumed subscription');
      const results = await recorder.waitFor(10);
      await publishByEndpoint(httpBase, topic, 1);
      const all = await recorder.waitFor(11);
      const offsets = all.map((r) => r.extensions?.subs?.offset);
      assertEqual(offsets, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'offsets across the reconnect');
      const epochs = new Set(all.map((r) => r.extensions?.subs?.epoch));
      if (epochs.size !== 1) fail(`one epoch expected, got ${[...epochs]}`);
      if (results.some((r) => r.errors)) fail(`errors in ${JSON.stringify(results)}`);
    } finally {
      await client.dispose();
    }
  });
}

async function anUnknownEpochIsAGap() {
  const topic = uniqueTopic('gap');
  const client = createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0 });
  await closesItsSubscriptions(httpBase, 'a resume from an unknown epoch', async (baseline) => {
    try {
      const recorder = new Recorder('a resume from an unknown epoch');
      client.subscribe(
        { query: QUERY, variables: { topic }, extensions: { subs: { resume: { epoch: 'nope', offset: 3 } } } },
        recorder.sink,
      );
      const [gap] = await recorder.waitFor(1);
      assertEqual(gap.data, null, 'the gap has no data');
      assertEqual(gap.errors?.[0]?.extensions?.code, 'HISTORY_GAP', 'the gap error code');
      assertEqual(gap.extensions?.subs?.recovered, false, 'the gap says it did not recover');
      await subscriptionsAtLeast(httpBase, baseline + 1, 'the subscription');
      await publishByEndpoint(httpBase, topic, 1);
      const [, live] = await recorder.waitFor(2);
      assertEqual(live.data, { ticks: { seq: 0 } }, 'live events follow the gap');
    } finally {
      await client.dispose();
    }
  });
}

await main(`graphql-ws resume recipe against ${wsUrl}`, [
  ['resume: reconnect without losing events', reconnectsWithoutLosingEvents],
  ['resume: an unknown epoch is a gap', anUnknownEpochIsAGap],
]);
