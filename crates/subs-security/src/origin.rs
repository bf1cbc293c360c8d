//! The `Origin` check at the HTTP upgrade (the adapter supplies the header).

use crate::{Error, Rejection, messages};

/// Which browser origins may open a connection.
///
/// A request **without** an `Origin` header is always allowed: browsers send
/// one on every WebSocket upgrade, so its absence means a non-browser client,
/// which could forge any header anyway. The check protects against
/// cross-site WebSocket hijacking, a risk when browsers authenticate with
/// cookies.
///
/// Default: [`OriginPolicy::AllowAny`]. subs authenticates in
/// `connection_init` (a token in the payload, which another site cannot read),
/// so any origin is safe by default; **configure an allow-list if your
/// authentication hook trusts cookies or other ambient credentials.**
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// Any origin.
    #[default]
    AllowAny,
    /// Only these origins, compared on scheme, host and port exactly (scheme
    /// and host case-insensitively; `https://a.com` equals `https://a.com:443`).
    /// Built with [`OriginPolicy::allow_list`], which validates each entry.
    AllowList(Vec<Origin>),
}

/// A parsed origin: scheme, host and port, lower-cased, default port filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]` (no path, query or user info).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |why| Error::InvalidOrigin {
            origin: text.to_owned(),
            why,
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://host[:port]"))?;
        let mut chars = scheme.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(invalid("invalid scheme"));
        }
        if rest.is_empty() {
            return Err(invalid("missing host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid(
                "an origin has no path, query, fragment or user info",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| invalid("invalid port"))?),
            };
            (format!("[{addr}]"), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("missing host"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let port = match port {
            Some(p) => Some(p.parse::<u16>().map_err(|_| invalid("invalid port"))?),
            None => None,
        };
        let default_port = match scheme.as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.or(default_port),
        })
    }
}

impl OriginPolicy {
    /// An allow-list; fails on an entry that is not `scheme://host[:port]`.
    pub fn allow_list<I, S>(origins: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        origins
            .into_iter()
            .map(|o| Origin::parse(o.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::AllowList)
    }

    /// Allows or refuses an upgrade with this `Origin` header (`None` when
    /// absent). Refusal: close 4403 "Origin not allowed" (an adapter that
    /// checks before upgrading answers HTTP 403 instead). Under an allow-list,
    /// `Origin: null` and malformed origins are refused.
    pub fn check(&self, origin: Option<&str>) -> Result<(), Rejection> {
        let (Self::AllowList(allowed), Some(origin)) = (self, origin) else {
            return Ok(());
        };
        match Origin::parse(origin.trim()) {
            Ok(o) if allowed.contains(&o) => Ok(()),
            _ => Err(Rejection::forbidden(messages::ORIGIN_NOT_ALLOWED)),
        }
    }
}
