//! The crate's one error type: misconfiguration by the caller.
//!
//! A client's violation is never an [`Error`]: it is a [`crate::Rejection`] (what
//! the client is told) inside a [`crate::Denied`] (which also names the reason).

/// A setting that cannot be honoured, found when it is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`crate::Quota`] with a zero rate, a zero period or a zero burst.
    #[error("invalid quota: {0}")]
    InvalidQuota(&'static str),
    /// An origin in an allow-list that is not `scheme://host[:port]`.
    #[error("invalid origin `{origin}` in the allow-list: {why}")]
    InvalidOrigin {
        /// The origin as configured.
        origin: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A capacity or count limit of zero where at least one is needed.
    #[error("invalid setting `{setting}`: must be at least 1")]
    ZeroLimit {
        /// The name of the setting.
        setting: &'static str,
    },
    /// An event field path that is empty or has an empty segment.
    #[error("invalid event field path `{0}`")]
    InvalidFieldPath(String),
}
