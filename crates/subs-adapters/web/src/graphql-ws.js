// The official graphql-ws client, as one ES module subs serves at
// `<path>?asset=graphql-ws.js` for pages of the host's own (the service board).
export { createClient } from "graphql-ws";
