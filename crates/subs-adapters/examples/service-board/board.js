// The live service board: lists the services, and shows status changes and
// new requests the moment the server publishes them, through subscriptions
// run by the official graphql-ws client (served by subs itself at
// `<ws path>?asset=graphql-ws.js`). The form files a request with a mutation.
const { http: HTTP_PATH, ws: WS_PATH } = document.body.dataset;
const { createClient } = await import(`${WS_PATH}?asset=graphql-ws.js`);

const $ = (id) => document.getElementById(id);
const services = new Map();

async function graphql(query, variables = {}) {
  const response = await fetch(HTTP_PATH, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  const result = await response.json();
  if (result.errors?.length) throw new Error(result.errors.map((e) => e.message).join("; "));
  return result.data;
}

function time(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

function renderService(service, flash) {
  services.set(service.id, service);
  let row = document.querySelector(`tr[data-service="${CSS.escape(service.id)}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.service = service.id;
    for (let i = 0; i < 4; i += 1) row.append(document.createElement("td"));
    $("services").append(row);
    const option = new Option(service.name, service.id);
    $("request-service").append(option);
  }
  const [id, name, status, updated] = row.children;
  id.textContent = service.id;
  name.textContent = service.name;
  status.innerHTML = "";
  const badge = document.createElement("span");
  badge.className = `status status-${service.status}`;
  badge.textContent = service.status;
  status.append(badge);
  row.dataset.status = service.status;
  updated.textContent = time(service.updatedAt);
  if (flash) {
    row.classList.remove("flash");
    void row.offsetWidth; // restart the animation
    row.classList.add("flash");
  }
}

function logEvent(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("events").prepend(item);
}

const client = createClient({
  url: new URL(WS_PATH, window.location.href).href.replace(/^http/, "ws"),
  on: {
    connected: () => {
      $("connection").textContent = "live";
      $("connection").classList.add("live");
    },
    closed: () => {
      $("connection").textContent = "reconnecting…";
      $("connection").classList.remove("live");
    },
  },
});

function subscribe(query, onData) {
  client.subscribe(
    { query },
    {
      next: ({ data }) => data && onData(data),
      error: (error) => logEvent(`subscription error: ${error?.message ?? "closed"}`),
      complete: () => {},
    },
  );
}

subscribe("subscription { serviceUpdated { id name status updatedAt } }", ({ serviceUpdated }) => {
  renderService(serviceUpdated, true);
});
subscribe(
  "subscription { serviceStatusChanged { serviceId previous current } }",
  ({ serviceStatusChanged: change }) => {
    const name = services.get(change.serviceId)?.name ?? change.serviceId;
    logEvent(`${name}: ${change.previous} → ${change.current}`);
  },
);
subscribe(
  "subscription { newServiceRequest { id serviceId title } }",
  ({ newServiceRequest: request }) => {
    const name = services.get(request.serviceId)?.name ?? request.serviceId;
    logEvent(`new request ${request.id} on ${name}: ${request.title}`);
  },
);

const { services: list } = await graphql("{ services { id name status updatedAt } }");
for (const service of list) renderService(service, false);
document.body.dataset.ready = "true";

$("request-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { fileServiceRequest: request } = await graphql(
      "mutation File($serviceId: ID!, $title: String!) { fileServiceRequest(serviceId: $serviceId, title: $title) { id } }",
      { serviceId: $("request-service").value, title: $("request-title").value },
    );
    $("form-result").textContent = `Filed ${request.id}`;
    $("request-title").value = "";
  } catch (error) {
    $("form-result").textContent = `Could not file the request: ${error.message}`;
  }
});
