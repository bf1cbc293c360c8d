// Builds the assets subs serves on its GraphQL endpoint into ../assets
// (checked in, so cargo builds offline), or into the directory given as its
// argument. Run by `cargo xtask web-assets` after `npm ci`; the same inputs
// give the same bytes, which `cargo xtask web-assets --check` (a CI step)
// relies on to prove the checked-in files are this script's output.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "..", "assets");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  legalComments: "none",
  target: "es2022",
  logLevel: "warning",
  define: { "process.env.NODE_ENV": '"production"' },
};

// The page: one JS and one CSS file. Monaco's codicon font is inlined in the
// CSS (font-src data: in the page's policy) because the CSS is served at
// `<path>?asset=...`, where a relative font URL would not resolve.
await build({
  ...common,
  entryPoints: { graphiql: join(here, "src", "graphiql.jsx") },
  outdir: out,
  format: "esm",
  jsx: "automatic",
  loader: { ".ttf": "dataurl", ".woff": "dataurl", ".woff2": "dataurl" },
});

// Monaco's workers, loaded by the page with `new Worker(...)`.
await build({
  ...common,
  entryPoints: {
    "editor.worker": join(here, "node_modules/monaco-editor/esm/vs/editor/editor.worker.js"),
    "json.worker": join(here, "node_modules/monaco-editor/esm/vs/language/json/json.worker.js"),
    "graphql.worker": join(here, "node_modules/monaco-graphql/esm/graphql.worker.js"),
  },
  outdir: out,
  format: "iife",
});

// The graphql-ws client for pages of the host's own.
await build({
  ...common,
  entryPoints: { "graphql-ws": join(here, "src", "graphql-ws.js") },
  outdir: out,
  format: "esm",
});

copyFileSync(join(here, "src", "graphiql.html"), join(out, "graphiql.html"));

// Gzipped twins of the scripts and the stylesheet, served to browsers that
// accept gzip (all do): 7 MB becomes about 2 MB on the wire. Node's gzip
// header has no time stamp, so the bytes are reproducible.
for (const file of readdirSync(out)) {
  if (!/\.(js|css)$/.test(file)) continue;
  writeFileSync(join(out, `${file}.gz`), gzipSync(readFileSync(join(out, file)), { level: 9 }));
}
// The files' validators (ETag), computed here so that the server does not
// hash megabytes when it starts.
const etags = {};
for (const file of readdirSync(out).sort()) {
  etags[file] = createHash("sha256").update(readFileSync(join(out, file))).digest("hex").slice(0, 32);
}
writeFileSync(join(out, "etags.json"), `${JSON.stringify(etags, null, 1)}\n`);
for (const file of readdirSync(out).sort()) console.log(file);
