// The GraphiQL page subs serves on its endpoint (`GET <path>` with
// `Accept: text/html`). Everything it loads comes from the endpoint itself
// (`<path>?asset=<file>`): no CDN, so it works offline and under the strict
// Content-Security-Policy the server sends with the page.
import React, { useMemo, useState } from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { getOperationAST, parse } from "graphql";
import { createClient } from "graphql-ws";
import "graphiql/style.css";
import "./page.css";

const endpoint = window.location.origin + window.location.pathname;
const asset = (file) => `${window.location.pathname}?asset=${file}`;

// Monaco's workers, built by build.mjs as classic scripts and served by subs
// (worker-src 'self' in the page's policy).
globalThis.MonacoEnvironment = {
  getWorker(_workerId, label) {
    switch (label) {
      case "json":
        return new Worker(asset("json.worker.js"));
      case "graphql":
        return new Worker(asset("graphql.worker.js"));
      default:
        return new Worker(asset("editor.worker.js"));
    }
  },
};

const TRANSPORT_KEY = "subs:graphiql:transport";

function isSubscription(params, opts) {
  try {
    const document = opts?.documentAST ?? parse(params.query);
    return getOperationAST(document, params.operationName)?.operation === "subscription";
  } catch {
    return false;
  }
}

// Queries and mutations: one POST, with the headers the user set.
async function httpResult(params, headers) {
  const response = await fetch(endpoint, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/graphql-response+json, application/json",
      ...headers,
    },
    body: JSON.stringify(params),
  });
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { errors: [{ message: `HTTP ${response.status}: ${text}` }] };
  }
}

// A stream of results as an async iterator whose `return()` stops it at once
// (GraphiQL calls it when the user stops the subscription).
function channel(start) {
  const queue = [];
  const waiting = [];
  let done = false;
  const push = (item) => {
    if (done) return;
    const waiter = waiting.shift();
    if (waiter) waiter(item);
    else queue.push(item);
  };
  const stop = start({
    next: (value) => push({ value, done: false }),
    error: (error) => {
      push({ value: { errors: [{ message: String(error?.message ?? error) }] }, done: false });
      push({ value: undefined, done: true });
    },
    complete: () => push({ value: undefined, done: true }),
  });
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next() {
      if (queue.length) {
        const item = queue.shift();
        if (item.done) done = true;
        return Promise.resolve(item);
      }
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => waiting.push((item) => {
        if (item.done) done = true;
        resolve(item);
      }));
    },
    return() {
      done = true;
      stop();
      for (const waiter of waiting.splice(0)) waiter({ value: undefined, done: true });
      return Promise.resolve({ value: undefined, done: true });
    },
  };
}

// Subscriptions over graphql-transport-ws. A browser cannot set headers on a
// WebSocket, so the user's headers travel as the `connection_init` payload;
// one client per set of headers.
let socket = { key: null, client: null };
function wsClient(headers) {
  const key = JSON.stringify(headers);
  if (socket.key !== key) {
    socket.client?.dispose();
    socket = {
      key,
      client: createClient({
        url: endpoint.replace(/^http/, "ws"),
        connectionParams: headers,
        lazy: true,
        retryAttempts: 0,
      }),
    };
  }
  return socket.client;
}

function overWebSocket(params, headers) {
  const client = wsClient(headers);
  return channel((sink) => client.subscribe(params, sink));
}

// Subscriptions over graphql-sse (distinct connections): a POST whose answer
// is the event stream; here the headers are real HTTP headers.
function overSse(params, headers) {
  return channel((sink) => {
    const abort = new AbortController();
    (async () => {
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream", ...headers },
        body: JSON.stringify(params),
        signal: abort.signal,
      });
      if (!response.ok || !response.body) {
        sink.next(await response.json().catch(() => ({ errors: [{ message: `HTTP ${response.status}` }] })));
        sink.complete();
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message";
          const data = [];
          for (const line of message.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
          }
          if (event === "next") sink.next(JSON.parse(data.join("\n")));
          else if (event === "complete") {
            sink.complete();
            abort.abort();
            return;
          }
        }
      }
      sink.complete();
    })().catch((error) => {
      if (!abort.signal.aborted) sink.error(error);
    });
    return () => abort.abort();
  });
}

function App() {
  const [transport, setTransport] = useState(
    () => window.localStorage.getItem(TRANSPORT_KEY) ?? "websocket",
  );
  const fetcher = useMemo(
    () => (params, opts) => {
      const headers = opts?.headers ?? {};
      if (!isSubscription(params, opts)) return httpResult(params, headers);
      return transport === "sse" ? overSse(params, headers) : overWebSocket(params, headers);
    },
    [transport],
  );
  const choose = (event) => {
    window.localStorage.setItem(TRANSPORT_KEY, event.target.value);
    setTransport(event.target.value);
  };
  return (
    <GraphiQL fetcher={fetcher} shouldPersistHeaders>
      <GraphiQL.Logo>
        <span className="subs-logo">subs</span>
        <label className="subs-transport">
          subscriptions over{" "}
          <select id="subs-transport" value={transport} onChange={choose}>
            <option value="websocket">WebSocket</option>
            <option value="sse">SSE</option>
          </select>
        </label>
      </GraphiQL.Logo>
    </GraphiQL>
  );
}

createRoot(document.getElementById("subs-graphiql")).render(<App />);
