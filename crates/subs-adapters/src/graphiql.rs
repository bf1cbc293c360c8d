//! GraphiQL on the endpoint: `GET <path>` from a browser (`Accept:
//! text/html`, no `query` parameter) answers the GraphiQL page, and
//! `GET <path>?asset=<file>` the files it loads. Every file is built from
//! the npm packages by `crates/subs-adapters/web` (`cargo xtask web-assets`)
//! into `crates/subs-adapters/assets`, checked in and compiled into the
//! crate: nothing comes from a CDN, so the page works offline and under the
//! strict policy below. The Python wheel embeds the crate, so it serves the
//! same bytes.
//!
//! The same `?asset=` route serves `graphql-ws.js`, the official
//! graphql-ws client as one ES module, for pages of the host's own (the
//! service desk's live board imports it).

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use subs_protocol::http::{ResponseFormat, negotiate};

use crate::http::HttpBody;
use crate::messages;

/// The page's Content-Security-Policy: only the endpoint's own origin.
/// What GraphiQL truly needs beyond `'self'`, and why:
/// - `style-src 'unsafe-inline'`: Monaco (GraphiQL 5's editor) and GraphiQL's
///   React components set `style` attributes and insert `<style>` elements
///   at run time; no nonce can cover those.
/// - `font-src data:` / `img-src data:`: the stylesheet carries its fonts and
///   icons inline (it is served at `<path>?asset=...`, where a relative URL
///   to a separate font file would not resolve under every mount path).
/// - `connect-src 'self'`: HTTP and the WebSocket to the same host (CSP 3
///   matches `ws:`/`wss:` of the page's host with `'self'`).
/// - `worker-src 'self'`: Monaco's language workers, served as assets.
///
/// No `'unsafe-eval'`, no inline script, no other origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; \
     connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// A file the endpoint serves: its name in `?asset=`, its media type, its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The name after `?asset=` (the file's name in `assets/`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
    /// The same, gzipped (`build.mjs` writes `<name>.gz`), for clients that
    /// accept gzip.
    pub gzip: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// The validators of the files, by file name (`build.mjs` writes them).
const ETAGS: &[u8] = include_bytes!("../assets/etags.json");

/// The page itself (not an asset: served on the endpoint path).
pub const PAGE: &[u8] = include_bytes!("../assets/graphiql.html");

/// Every file the page (or a host's page) may load, as `build.mjs` writes them.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphiql.js"),
        gzip: include_bytes!("../assets/graphiql.js.gz"),
    },
    Asset {
        name: "graphiql.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/graphiql.css"),
        gzip: include_bytes!("../assets/graphiql.css.gz"),
    },
    Asset {
        name: "editor.worker.js",
        content_type: JS,
        bytes: include_bytes!("../assets/editor.worker.js"),
        gzip: include_bytes!("../assets/editor.worker.js.gz"),
    },
    Asset {
        name: "json.worker.js",
        content_type: JS,
        bytes: include_bytes!("../assets/json.worker.js"),
        gzip: include_bytes!("../assets/json.worker.js.gz"),
    },
    Asset {
        name: "graphql.worker.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphql.worker.js"),
        gzip: include_bytes!("../assets/graphql.worker.js.gz"),
    },
    Asset {
        name: "graphql-ws.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphql-ws.js"),
        gzip: include_bytes!("../assets/graphql-ws.js.gz"),
    },
];

/// The asset called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// GraphiQL's answer to a request on the endpoint path, or `None` when the
/// request is GraphQL's (any method but `GET`, a `query` parameter, or a
/// client that prefers JSON or a stream).
pub(crate) fn answer<B>(request: &Request<B>) -> Option<Response<HttpBody>> {
    if request.method() != Method::GET {
        return None;
    }
    let mut has_query = false;
    for (name, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        match &*name {
            "asset" => {
                return Some(match asset(&value) {
                    Some(asset) if accepts_gzip(request.headers()) => {
                        let mut response = file(
                            request,
                            asset.content_type,
                            asset.gzip,
                            etag(&format!("{}.gz", asset.name)),
                        );
                        response
                            .headers_mut()
                            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                        response
                    }
                    Some(asset) => file(request, asset.content_type, asset.bytes, etag(asset.name)),
                    None => not_found(),
                });
            }
            "query" => has_query = true,
            _ => {}
        }
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    (!has_query && negotiate(accept) == Some(ResponseFormat::Html)).then(|| {
        file(
            request,
            "text/html; charset=utf-8",
            PAGE,
            etag("graphiql.html"),
        )
    })
}

/// Whether the `Accept-Encoding` header names gzip (or `*`) with a quality
/// above zero.
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// A strong validator of a file (a digest of its bytes, written by
/// `build.mjs` into `etags.json`), so a browser revalidates with
/// `If-None-Match` and gets 304 until subs (and so the file) changes. `file`
/// is its name in `assets/` (`<name>.gz` for a gzipped twin).
fn etag(file: &str) -> &'static str {
    static TAGS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        serde_json::from_slice::<HashMap<String, String>>(ETAGS)
            .unwrap_or_default()
            .into_iter()
            .map(|(file, digest)| (file, format!("\"{digest}\"")))
            .collect()
    });
    tags.get(file).map_or("\"\"", String::as_str)
}

fn file<B>(
    request: &Request<B>,
    content_type: &'static str,
    bytes: &'static [u8],
    tag: &str,
) -> Response<HttpBody> {
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if unchanged {
        let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(Either::Left(Full::new(Bytes::from_static(bytes))))
    };
    let headers = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with subs' version only; a browser revalidates.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page and the endpoint's answers differ by `Accept`, the files by
    // `Accept-Encoding`.
    headers.insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    response
}

fn not_found() -> Response<HttpBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(
        messages::UNKNOWN_ASSET.as_bytes(),
    ))));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
