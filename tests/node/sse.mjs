// The official graphql-sse client against a bench server, in both modes of
// the GraphQL over Server-Sent Events Protocol: distinct connections and
// single connection.
//
//   node sse.mjs http://127.0.0.1:4000
//
// The endpoint is `<base>/graphql`; `<base>/stats` gives the server's
// subscription count, so every wait is on an observable condition (each with
// a 10 s timeout that fails the check). Per mode:
//   - `{ hello }` through the SSE client answers {"data":{"hello":"world"}};
//   - `ticks`: once the server counts the subscription, 20 events published
//     through `mutation { publish }` over HTTP arrive as seq 0..19 in order,
//     exactly once (a second publish of one event arrives right after them,
//     so nothing else was in flight); disposing brings the count back down;
//   - `viewer` with the header `X-User: alice` answers `user: "alice"`, and
//     a client without it `user: "anonymous"`, for the same event.
// Exits 1 when a check fails, with what the server sent.

import { createClient } from 'graphql-sse';
import {
  Recorder,
  assertData,
  assertEqual,
  assertTicks,
  closesItsSubscriptions,
  main,
  publishByMutation,
  subscriptionsAtLeast,
  uniqueTopic,
} from './lib.mjs';

const EVENTS = 20;

const base = process.argv[2]?.replace(/\/+$/, '');
if (!base || !/^https?:\/\//.test(base)) {
  console.error('usage: node sse.mjs <base url of the server, e.g. http://127.0.0.1:4000>');
  process.exit(2);
}
const url = `${base}/graphql`;

const MODES = [
  ['distinct connections', { singleConnection: false }],
  ['single connection', { singleConnection: true }],
];

function client(mode, headers = {}) {
  return createClient({
    url,
    ...mode,
    // A fresh object per client: in single-connection mode the client adds
    // its stream token to the headers object it is given.
    headers: { ...headers },
    // Fail at once rather than reconnect: a reconnect would hide a failure.
    retryAttempts: 0,
  });
}

async function queryHello(mode, label) {
  const sse = client(mode);
  try {
    const recorder = new Recorder(`{ hello } over SSE (${label})`);
    sse.subscribe({ query: '{ hello }' }, recorder.sink);
    await recorder.waitForComplete();
    assertEqual(recorder.results, [{ data: { hello: 'world' } }], `{ hello } over SSE (${label})`);
  } finally {
    sse.dispose();
  }
}

async function ticks(mode, label) {
  const topic = uniqueTopic('sse-ticks');
  const what = `the ticks subscription over SSE (${label})`;
  await closesItsSubscriptions(base, what, async (baseline) => {
    const sse = client(mode);
    let unsubscribe = () => {};
    try {
      const recorder = new Recorder(what);
      unsubscribe = sse.subscribe(
        { query: 'subscription Ticks($topic: String!) { ticks(topic: $topic) { seq } }', variables: { topic } },
        recorder.sink,
      );
      await subscriptionsAtLeast(base, baseline + 1, what);
      await publishByMutation(base, topic, EVENTS);
      assertTicks(await recorder.waitFor(EVENTS), 0, `the ${EVENTS} events`);
      // Published after the 20 arrived, and delivered in publish order: had any
      // of the 20 been sent twice, the copy would arrive before this one.
      await publishByMutation(base, topic, 1);
      const [marker] = (await recorder.waitFor(EVENTS + 1)).slice(EVENTS);
      assertData(marker, { ticks: { seq: 0 } }, `the event published once the ${EVENTS} arrived (none twice)`);
    } finally {
      unsubscribe();
      sse.dispose();
    }
  });
}

async function viewer(mode, label) {
  const topic = uniqueTopic('sse-viewer');
  const what = `two viewer subscriptions over SSE (${label})`;
  await closesItsSubscriptions(base, what, async (baseline) => {
    const alice = client(mode, { 'X-User': 'alice' });
    const anonymous = client(mode);
    const unsubscribe = [];
    try {
      const request = {
        query: 'subscription Viewer($topic: String!) { viewer(topic: $topic) { seq user } }',
        variables: { topic },
      };
      const asAlice = new Recorder(`viewer over SSE as X-User: alice (${label})`);
      const asAnonymous = new Recorder(`viewer over SSE without X-User (${label})`);
      unsubscribe.push(alice.subscribe(request, asAlice.sink));
      unsubscribe.push(anonymous.subscribe(request, asAnonymous.sink));
      await subscriptionsAtLeast(base, baseline + 2, what);
      await publishByMutation(base, topic, 1);
      const [forAlice] = await asAlice.waitFor(1);
      assertData(forAlice, { viewer: { seq: 0, user: 'alice' } }, 'viewer with the header X-User: alice');
      const [forAnonymous] = await asAnonymous.waitFor(1);
      assertData(forAnonymous, { viewer: { seq: 0, user: 'anonymous' } }, 'viewer without X-User');
    } finally {
      for (const stop of unsubscribe) stop();
      alice.dispose();
      anonymous.dispose();
    }
  });
}

const checks = [];
for (const [label, mode] of MODES) {
  checks.push([`sse ${label}: { hello }`, () => queryHello(mode, label)]);
  checks.push([`sse ${label}: ticks, ${EVENTS} events in order exactly once, then dispose`, () => ticks(mode, label)]);
  checks.push([`sse ${label}: viewer sees its principal from X-User`, () => viewer(mode, label)]);
}
await main(`graphql-sse client against ${url}`, checks);
