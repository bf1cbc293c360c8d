// The official graphql-ws client (graphql-transport-ws) against a bench
// server.
//
//   node ws.mjs ws://127.0.0.1:4000/graphql
//
// `{ hello }` answers {"data":{"hello":"world"}}; a `ticks` subscription,
// once the server counts it (`/stats` on the same host), receives 20 events
// published through the contract's `POST /publish` as seq 0..19 in order;
// disposing the client brings the server's count back down. Every wait has
// a 10 s timeout. Exits 1 when a check fails.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import {
  Recorder,
  assertEqual,
  assertTicks,
  closesItsSubscriptions,
  main,
  publishByEndpoint,
  subscriptionsAtLeast,
  uniqueTopic,
} from './lib.mjs';

const EVENTS = 20;

const wsUrl = process.argv[2];
if (!wsUrl || !/^wss?:\/\//.test(wsUrl)) {
  console.error('usage: node ws.mjs <WebSocket url of the endpoint, e.g. ws://127.0.0.1:4000/graphql>');
  process.exit(2);
}
// The same server's HTTP side, for /stats and /publish.
const base = new URL(wsUrl);
base.protocol = base.protocol === 'wss:' ? 'https:' : 'http:';
const httpBase = base.origin;

function client() {
  return createClient({
    url: wsUrl,
    // Node 20 has no global WebSocket.
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
  });
}

async function queryHello() {
  const ws = client();
  try {
    const recorder = new Recorder('{ hello } over graphql-ws');
    ws.subscribe({ query: '{ hello }' }, recorder.sink);
    await recorder.waitForComplete();
    assertEqual(recorder.results, [{ data: { hello: 'world' } }], '{ hello } over graphql-ws');
  } finally {
    await ws.dispose();
  }
}

async function ticks() {
  const topic = uniqueTopic('ws-ticks');
  const what = 'the ticks subscription over graphql-ws';
  await closesItsSubscriptions(httpBase, what, async (baseline) => {
    const ws = client();
    try {
      const recorder = new Recorder(what);
      ws.subscribe(
        { query: 'subscription Ticks($topic: String!) { ticks(topic: $topic) { seq } }', variables: { topic } },
        recorder.sink,
      );
      await subscriptionsAtLeast(httpBase, baseline + 1, what);
      await publishByEndpoint(httpBase, topic, EVENTS);
      assertTicks(await recorder.waitFor(EVENTS), 0, `the ${EVENTS} events over graphql-ws`);
    } finally {
      await ws.dispose();
    }
  });
}

await main(`graphql-ws client against ${wsUrl}`, [
  ['ws: { hello }', queryHello],
  [`ws: ticks, ${EVENTS} events in order, then dispose`, ticks],
]);
