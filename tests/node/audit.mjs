// Every server audit of graphql-http (the GraphQL over HTTP reference
// implementation) against one URL.
//
//   node audit.mjs http://127.0.0.1:4000/graphql
//
// Prints one line per audit (`ok`, `NOTICE` for a MAY, `WARN` for a SHOULD,
// `ERROR` for a MUST) with its id, name and reason; for every failing audit
// also the request that failed and the server's response (status, headers,
// body). Ends with the list of warnings and notices, so they can be listed and
// justified in the docs. Exits 1 when any MUST-level audit fails, 2 on a
// usage error or when an audit cannot run at all.

import { serverAudits } from 'graphql-http';

/** How long one audit's request may take before it fails the run. */
const REQUEST_TIMEOUT_MS = 10_000;
/** The longest response body printed for a failing audit. */
const MAX_BODY_CHARS = 2_000;

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <url of the GraphQL endpoint, e.g. http://127.0.0.1:4000/graphql>');
  process.exit(2);
}

// Each audit runs alone (one after the other), so the exchanges recorded
// while it runs are its own: printed when it fails, with the body as the
// server sent it (the audit itself may have consumed its copy).
let exchanges = [];

async function recordingFetch(input, init = {}) {
  const request = {
    method: init.method ?? 'GET',
    url: String(input),
    headers: init.headers ?? {},
    body: init.body,
  };
  const exchange = { request, response: null };
  exchanges.push(exchange);
  const res = await fetch(input, {
    ...init,
    signal: init.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const copy = res.clone();
  exchange.response = {
    status: res.status,
    statusText: res.statusText,
    headers: [...res.headers.entries()],
    // Read in the background; awaited when printed, bounded in time so a
    // body that never ends (a stream answered by mistake) cannot hang us.
    body: readBody(copy),
  };
  return res;
}

async function readBody(res) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), REQUEST_TIMEOUT_MS);
  });
  try {
    const text = await Promise.race([res.text(), timeout]);
    if (text === null) {
      res.body?.cancel().catch(() => {});
      return `<body not complete after ${REQUEST_TIMEOUT_MS} ms>`;
    }
    return text.length > MAX_BODY_CHARS
      ? `${text.slice(0, MAX_BODY_CHARS)}... (${text.length} chars)`
      : text;
  } catch (err) {
    return `<body unreadable: ${err}>`;
  } finally {
    clearTimeout(timer);
  }
}

async function describe(exchange) {
  const { request, response } = exchange;
  const lines = [];
  const headers = Object.entries(request.headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  lines.push(`    request:  ${request.method} ${request.url}${headers ? ` [${headers}]` : ''}`);
  if (request.body !== undefined) {
    lines.push(`    body:     ${String(request.body)}`);
  }
  if (!response) {
    lines.push('    response: <none: the request failed>');
    return lines;
  }
  lines.push(`    response: ${response.status} ${response.statusText}`);
  for (const [k, v] of response.headers) {
    lines.push(`      ${k}: ${v}`);
  }
  lines.push(`    body:     ${await response.body}`);
  return lines;
}

const LABEL = { ok: 'ok', notice: 'NOTICE', warn: 'WARN', error: 'ERROR' };

const audits = serverAudits({ url, fetchFn: recordingFetch });
const results = [];
for (const audit of audits) {
  exchanges = [];
  let result;
  try {
    result = await audit.fn();
  } catch (err) {
    // graphql-http throws (rather than failing the audit) only when the audit
    // cannot run at all, e.g. the server cannot be reached.
    console.error(`FATAL ${audit.id} ${audit.name}: ${err?.stack ?? err}`);
    for (const exchange of exchanges) {
      for (const line of await describe(exchange)) console.error(line);
    }
    process.exit(2);
  }
  results.push(result);
  const label = LABEL[result.status] ?? result.status;
  if (result.status === 'ok') {
    console.log(`${label.padEnd(6)} ${result.id} ${result.name}`);
    continue;
  }
  console.log(`${label.padEnd(6)} ${result.id} ${result.name}: ${result.reason}`);
  for (const exchange of exchanges) {
    for (const line of await describe(exchange)) console.log(line);
  }
}

const count = (status) => results.filter((r) => r.status === status);
const errors = count('error');
const warnings = count('warn');
const notices = count('notice');

console.log('');
console.log(
  `${results.length} audits: ${count('ok').length} ok, ${errors.length} errors (MUST), ` +
    `${warnings.length} warnings (SHOULD), ${notices.length} notices (MAY)`,
);
if (warnings.length > 0) {
  console.log('warnings:');
  for (const r of warnings) console.log(`  ${r.id} ${r.name}: ${r.reason}`);
}
if (notices.length > 0) {
  console.log('notices:');
  for (const r of notices) console.log(`  ${r.id} ${r.name}: ${r.reason}`);
}
if (errors.length > 0) {
  console.log('errors:');
  for (const r of errors) console.log(`  ${r.id} ${r.name}: ${r.reason}`);
  console.error(`FAIL: ${errors.length} MUST-level audit(s) of graphql-http failed against ${url}`);
  process.exit(1);
}
console.log(`PASS: every MUST-level audit of graphql-http passed against ${url}`);
