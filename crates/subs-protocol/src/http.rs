//! GraphQL over HTTP, sans IO: what a request to the GraphQL endpoint asks
//! for (its `Accept` header) and the operation it carries (its body or query
//! string), following the GraphQL-over-HTTP specification. The adapters
//! (hyper, axum, the Python bindings) read the request, call these, and
//! answer; the statuses and messages are decided here, once.

use serde_json::{Map, Value};

use crate::SubscribePayload;

/// The media type of GraphQL responses that report request errors with 4xx.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
/// The legacy media type of GraphQL responses (always 200 for a well-formed request).
pub const APPLICATION_JSON: &str = "application/json; charset=utf-8";

/// What the client accepts in answer to a request on the GraphQL endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `application/graphql-response+json`: request errors are 4xx.
    GraphQLResponseJson,
    /// `application/json`: every well-formed request is answered with 200.
    Json,
    /// `text/event-stream`: graphql-sse.
    EventStream,
    /// `multipart/mixed` with `subscriptionSpec`: Apollo's multipart protocol.
    Multipart,
    /// `text/html` (a browser): the GraphQL IDE, where the server serves one.
    Html,
}

/// Picks the format to answer with from an `Accept` header. No header, and
/// `*/*`, mean `application/json`, as the specification asks. Among the formats
/// with the client's highest quality, subs prefers a stream (clients name
/// one only when they want it: Apollo's clients send
/// `multipart/mixed;subscriptionSpec=1.0,application/json`), then
/// `application/graphql-response+json`, then `application/json`, then HTML.
/// `None`: nothing acceptable (406).
///
/// `multipart/mixed` counts only with a `subscriptionSpec` parameter (any
/// spelling: quoted or not, any case, with or without `boundary`); Apollo's
/// `deferSpec` alone asks for incremental delivery, which subs does not
/// serve, so such a client gets JSON from its next choice.
pub fn negotiate(accept: Option<&str>) -> Option<ResponseFormat> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ResponseFormat::Json);
    };
    let mut best: Option<(u16, u8, ResponseFormat)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut quality = 1000u16;
        let mut subscription_spec = false;
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => quality = parse_quality(value),
                "subscriptionspec" => subscription_spec = true,
                _ => {}
            }
        }
        let candidates: &[ResponseFormat] = match media.as_str() {
            "application/graphql-response+json" => &[ResponseFormat::GraphQLResponseJson],
            "application/json" => &[ResponseFormat::Json],
            // The specification asks for the legacy type here, for clients
            // written before `application/graphql-response+json`.
            "application/*" | "*/*" => &[ResponseFormat::Json],
            "text/event-stream" => &[ResponseFormat::EventStream],
            "multipart/mixed" if subscription_spec => &[ResponseFormat::Multipart],
            "text/html" => &[ResponseFormat::Html],
            _ => &[],
        };
        for &format in candidates {
            if quality == 0 {
                continue;
            }
            let preference = preference(format);
            if best.is_none_or(|(q, p, _)| quality > q || (quality == q && preference < p)) {
                best = Some((quality, preference, format));
            }
        }
    }
    best.map(|(_, _, format)| format)
}

fn preference(format: ResponseFormat) -> u8 {
    match format {
        ResponseFormat::EventStream => 0,
        ResponseFormat::Multipart => 1,
        ResponseFormat::GraphQLResponseJson => 2,
        ResponseFormat::Json => 3,
        ResponseFormat::Html => 4,
    }
}

/// A quality value in thousandths (`q=0.5` is 500); malformed is 0.
fn parse_quality(value: &str) -> u16 {
    value
        .parse::<f32>()
        .ok()
        .filter(|q| (0.0..=1.0).contains(q))
        .map_or(0, |q| (q * 1000.0).round() as u16)
}

/// Why a request carries no operation subs can run. Each has the HTTP status
/// the specification gives it; its text is the message of the one error in
/// the answer's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not `GET` or `POST` (405, with `Allow: GET, POST`).
    #[error("the GraphQL endpoint takes GET and POST requests")]
    MethodNotAllowed,
    /// A `POST` body that is not `application/json` (415).
    #[error("a POST request's Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body is not JSON (400).
    #[error("the request body is not valid JSON")]
    MalformedJson,
    /// The body is JSON but not an object (400).
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// No `query` (400).
    #[error("the request has no 'query'")]
    MissingQuery,
    /// A parameter of the wrong type (400); the string names it.
    #[error("'{0}' has the wrong type")]
    WrongType(&'static str),
    /// A `GET` parameter that must hold JSON (`variables`, `extensions`) does
    /// not (400); the string names it.
    #[error("'{0}' is not a JSON object")]
    NotJsonObject(&'static str),
    /// A mutation in a `GET` request (405, with `Allow: POST`).
    #[error("mutations are only accepted in POST requests")]
    MutationOverGet,
}

impl RequestError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::MethodNotAllowed | RequestError::MutationOverGet => 405,
            RequestError::UnsupportedMediaType => 415,
            _ => 400,
        }
    }

    /// The `Allow` header of a 405 answer.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            RequestError::MethodNotAllowed => Some("GET, POST"),
            RequestError::MutationOverGet => Some("POST"),
            _ => None,
        }
    }

    /// The answer's body: `{"errors":[{"message":...}]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "errors": [{ "message": self.to_string() }] }).to_string()
    }
}

/// The operation of a GraphQL over HTTP request: the parameters of a `GET`
/// (`query`, `operationName`, and `variables` and `extensions` as JSON
/// text) or the JSON body of a `POST`. `content_type` and `body` matter for
/// `POST` only.
pub fn parse_request(
    method: &str,
    query_string: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<SubscribePayload, RequestError> {
    match method {
        "GET" => parse_query_string(query_string.unwrap_or_default()),
        "POST" => {
            if !content_type.is_some_and(is_json) {
                return Err(RequestError::UnsupportedMediaType);
            }
            let value: Value =
                serde_json::from_slice(body).map_err(|_| RequestError::MalformedJson)?;
            let Value::Object(map) = value else {
                return Err(RequestError::NotAnObject);
            };
            from_object(map)
        }
        _ => Err(RequestError::MethodNotAllowed),
    }
}

fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
}

fn parse_query_string(query_string: &str) -> Result<SubscribePayload, RequestError> {
    let mut map = Map::new();
    for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
        let value = match &*name {
            "query" | "operationName" => Value::String(value.into_owned()),
            "variables" | "extensions" => {
                let field = if name == "variables" {
                    "variables"
                } else {
                    "extensions"
                };
                match serde_json::from_str::<Value>(&value) {
                    Ok(object @ (Value::Object(_) | Value::Null)) => object,
                    _ => return Err(RequestError::NotJsonObject(field)),
                }
            }
            _ => continue,
        };
        map.insert(name.into_owned(), value);
    }
    from_object(map)
}

fn from_object(mut map: Map<String, Value>) -> Result<SubscribePayload, RequestError> {
    let query = match map.remove("query") {
        None => return Err(RequestError::MissingQuery),
        Some(Value::String(query)) => query,
        Some(_) => return Err(RequestError::WrongType("query")),
    };
    let operation_name = match map.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(RequestError::WrongType("operationName")),
    };
    let object = |field: &'static str, value: Option<Value>| match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(RequestError::WrongType(field)),
    };
    Ok(SubscribePayload {
        query,
        operation_name,
        variables: object("variables", map.remove("variables"))?,
        extensions: object("extensions", map.remove("extensions"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_formats_clients_send() {
        use ResponseFormat::*;
        let cases = [
            (None, Some(Json)),
            (Some("application/json"), Some(Json)),
            (
                Some("application/graphql-response+json, application/json;q=0.9"),
                Some(GraphQLResponseJson),
            ),
            (
                Some("application/json, application/graphql-response+json"),
                Some(GraphQLResponseJson),
            ),
            (Some("*/*"), Some(Json)),
            (Some("application/*"), Some(Json)),
            (Some("text/event-stream"), Some(EventStream)),
            // Apollo Client, Apollo Kotlin and iOS, gql:
            (
                Some("multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0,application/json"),
                Some(Multipart),
            ),
            (
                Some("multipart/mixed;subscriptionSpec=\"1.0\", application/json"),
                Some(Multipart),
            ),
            (
                Some("multipart/mixed;subscriptionSpec=1.0;q=0.5, application/json"),
                Some(Json),
            ),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                Some(Html),
            ),
            (
                Some("multipart/mixed; subscriptionspec=\"1.0\""),
                Some(Multipart),
            ),
            (
                Some("multipart/mixed;deferSpec=20220824, application/json"),
                Some(Json),
            ),
            (Some("text/html,application/xhtml+xml"), Some(Html)),
            (Some("image/png"), None),
            (Some("application/json;q=0"), None),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn parses_get_and_post_requests() {
        let get = parse_request(
            "GET",
            Some("query=%7B%20hello%20%7D&operationName=Q&variables=%7B%22a%22%3A1%7D"),
            None,
            b"",
        )
        .unwrap();
        assert_eq!(get.query, "{ hello }");
        assert_eq!(get.operation_name.as_deref(), Some("Q"));
        assert_eq!(get.variables.unwrap()["a"], 1);
        let post = parse_request(
            "POST",
            None,
            Some("application/json; charset=utf-8"),
            br#"{"query":"{ hello }","variables":null,"extensions":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(post.query, "{ hello }");
        assert!(post.variables.is_none());
        assert_eq!(post.extensions.unwrap()["x"], 1);
    }

    #[test]
    fn refuses_malformed_requests_with_the_specified_status() {
        /// Method, query string, content type, body, expected status.
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8], u16);
        let cases: [Case<'_>; 8] = [
            ("PUT", None, None, b"", 405),
            ("POST", None, Some("text/plain"), b"{}", 415),
            ("POST", None, None, b"{}", 415),
            ("POST", None, Some("application/json"), b"{", 400),
            ("POST", None, Some("application/json"), b"[]", 400),
            ("POST", None, Some("application/json"), b"{}", 400),
            (
                "POST",
                None,
                Some("application/json"),
                br#"{"query":1}"#,
                400,
            ),
            ("GET", Some("query=x&variables=%5B%5D"), None, b"", 400),
        ];
        for (method, query, content_type, body, status) in cases {
            let error = parse_request(method, query, content_type, body).unwrap_err();
            assert_eq!(
                error.status(),
                status,
                "{method} {query:?} {content_type:?}"
            );
            let json: Value = serde_json::from_str(&error.to_json()).unwrap();
            assert!(json["errors"][0]["message"].is_string());
        }
    }
}
