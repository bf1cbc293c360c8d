//! The Origin check.

use subs_security::{Error, Origin, OriginPolicy, Rejection};

#[test]
fn allow_any_is_the_default_and_allows_everything() {
    let p = OriginPolicy::default();
    assert_eq!(p, OriginPolicy::AllowAny);
    assert_eq!(p.check(Some("https://evil.example")), Ok(()));
    assert_eq!(p.check(Some("null")), Ok(()));
    assert_eq!(p.check(None), Ok(()));
}

#[test]
fn allow_list_compares_scheme_host_and_port() {
    let p = OriginPolicy::allow_list(["https://App.Example.com", "http://localhost:3000"]).unwrap();
    let refused = Err(Rejection::forbidden("Origin not allowed"));
    assert_eq!(p.check(Some("https://app.example.com")), Ok(()));
    assert_eq!(p.check(Some("HTTPS://APP.EXAMPLE.COM")), Ok(()));
    assert_eq!(
        p.check(Some("https://app.example.com:443")),
        Ok(()),
        "default port"
    );
    assert_eq!(p.check(Some("http://localhost:3000")), Ok(()));
    assert_eq!(
        p.check(Some("http://app.example.com")),
        refused,
        "scheme differs"
    );
    assert_eq!(
        p.check(Some("https://app.example.com:8443")),
        refused,
        "port differs"
    );
    assert_eq!(p.check(Some("https://evil.app.example.com")), refused);
    assert_eq!(p.check(Some("https://app.example.com.evil")), refused);
    assert_eq!(p.check(Some("http://localhost")), refused);
    assert_eq!(p.check(Some("null")), refused);
    assert_eq!(p.check(Some("")), refused);
    assert_eq!(p.check(Some("garbage")), refused);
    assert_eq!(p.check(Some("https://app.example.com/path")), refused);
    assert_eq!(p.check(None), Ok(()), "non-browser clients send no Origin");
    assert_eq!(p.check(Some("null")).unwrap_err().close_code(), Some(4403));
}

#[test]
fn ipv6_origins() {
    let p = OriginPolicy::allow_list(["http://[::1]:8080"]).unwrap();
    assert_eq!(p.check(Some("http://[::1]:8080")), Ok(()));
    assert!(p.check(Some("http://[::1]")).is_err());
}

#[test]
fn invalid_allow_list_entries_are_errors() {
    for bad in [
        "example.com",
        "https://",
        "https://example.com/",
        "https://example.com:99999",
        "https://example.com:",
        "1http://example.com",
        "https://user@example.com",
        "http://[::1",
    ] {
        assert!(
            matches!(
                OriginPolicy::allow_list([bad]),
                Err(Error::InvalidOrigin { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(
        Origin::parse("https://a.test").unwrap(),
        Origin::parse("HTTPS://A.TEST:443").unwrap()
    );
}
