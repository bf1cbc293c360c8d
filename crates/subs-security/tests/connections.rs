//! Connection counting per address and per principal, and release.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::thread;

use subs_security::{
    ConnectionLimiter, Error, Principal, Rejection, SharedConnectionLimiter, messages,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn per_ip_counting_and_release() {
    let mut cl = ConnectionLimiter::new(Some(2), None).unwrap();
    let a = ip("198.51.100.1");
    assert_eq!(cl.try_open_ip(a), Ok(()));
    assert_eq!(cl.try_open_ip(a), Ok(()));
    assert_eq!(
        cl.try_open_ip(a),
        Err(Rejection::too_many_requests(
            "Too many connections from this address"
        ))
    );
    assert_eq!(cl.try_open_ip(a).unwrap_err().close_code(), Some(4429));
    assert_eq!(cl.try_open_ip(ip("198.51.100.2")), Ok(()));
    assert_eq!(cl.connections_from(a), 2);
    cl.release_ip(a);
    assert_eq!(cl.try_open_ip(a), Ok(()));
    cl.release_ip(a);
    cl.release_ip(a);
    cl.release_ip(ip("198.51.100.2"));
    assert_eq!(cl.tracked_keys(), 0, "entries are removed at zero");
    cl.release_ip(a); // releasing what is not counted does nothing
    assert_eq!(cl.connections_from(a), 0);
}

#[test]
fn ipv6_grouped_by_prefix_and_mapped_v4_unmapped() {
    let mut cl = ConnectionLimiter::new(Some(1), None).unwrap();
    assert_eq!(cl.try_open_ip(ip("2001:db8:1:2::1")), Ok(()));
    assert!(
        cl.try_open_ip(ip("2001:db8:1:2:ffff::9")).is_err(),
        "same /64"
    );
    assert_eq!(cl.try_open_ip(ip("2001:db8:1:3::1")), Ok(()), "other /64");
    assert_eq!(cl.try_open_ip(ip("192.0.2.1")), Ok(()));
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    assert!(
        cl.try_open_ip(mapped).is_err(),
        "mapped address counts as IPv4"
    );
    assert_eq!(cl.address_key(mapped), ip("192.0.2.1"));

    let mut exact = ConnectionLimiter::new(Some(1), None)
        .unwrap()
        .ipv6_prefix_len(128);
    assert_eq!(exact.try_open_ip(ip("2001:db8::1")), Ok(()));
    assert_eq!(exact.try_open_ip(ip("2001:db8::2")), Ok(()));
    let all = ConnectionLimiter::new(None, None)
        .unwrap()
        .ipv6_prefix_len(0);
    assert_eq!(
        all.address_key(ip("2001:db8::1")),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    );
}

#[test]
fn per_principal_counting_by_tenant_and_id_anonymous_exempt() {
    let mut cl = ConnectionLimiter::new(None, Some(1)).unwrap();
    let alice = Principal::new("alice").with_tenant("acme");
    assert_eq!(cl.try_bind_principal(&alice), Ok(()));
    assert_eq!(
        cl.try_bind_principal(&alice),
        Err(Rejection::too_many_requests(
            messages::TOO_MANY_CONNECTIONS_FOR_PRINCIPAL
        ))
    );
    // Same id in another tenant is another principal.
    assert_eq!(
        cl.try_bind_principal(&Principal::new("alice").with_tenant("globex")),
        Ok(())
    );
    for _ in 0..10 {
        assert_eq!(cl.try_bind_principal(&Principal::anonymous()), Ok(()));
    }
    assert_eq!(cl.connections_of(&Principal::anonymous()), 0);
    cl.release_principal(&alice);
    assert_eq!(cl.try_bind_principal(&alice), Ok(()));
}

#[test]
fn zero_maxima_are_configuration_errors() {
    assert!(matches!(
        ConnectionLimiter::new(Some(0), None),
        Err(Error::ZeroLimit { .. })
    ));
    assert!(matches!(
        ConnectionLimiter::new(None, Some(0)),
        Err(Error::ZeroLimit { .. })
    ));
}

#[test]
fn shared_limiter_permits_release_on_drop() {
    let shared = SharedConnectionLimiter::new(ConnectionLimiter::new(Some(2), Some(1)).unwrap());
    let a = ip("203.0.113.9");
    let mut p1 = shared.try_open(Some(a)).unwrap();
    let p2 = shared.try_open(Some(a)).unwrap();
    assert!(shared.try_open(Some(a)).is_err());
    let unknown = shared.try_open(None).unwrap(); // no address: not counted
    assert_eq!(unknown.peer(), None);

    let bob = Principal::new("bob");
    p1.bind_principal(&bob).unwrap();
    p1.bind_principal(&bob).unwrap(); // rebinding the same principal is a no-op
    let mut p3 = shared.try_open(None).unwrap();
    assert_eq!(
        p3.bind_principal(&bob).unwrap_err().close_code(),
        Some(4429)
    );
    // Rebinding to another principal releases the first.
    p1.bind_principal(&Principal::new("carol")).unwrap();
    assert_eq!(shared.connections_of(&bob), 0);
    p3.bind_principal(&bob).unwrap();

    drop(p1);
    assert_eq!(shared.connections_from(a), 1);
    drop((p2, p3, unknown));
    assert_eq!(shared.tracked_keys(), 0);
}

#[test]
fn shared_limiter_counts_exactly_across_threads() {
    let shared = SharedConnectionLimiter::new(ConnectionLimiter::new(Some(1000), None).unwrap());
    let a = ip("203.0.113.10");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let shared = shared.clone();
            thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..500 {
                    if let Ok(p) = shared.try_open(Some(a)) {
                        held.push(p);
                    }
                    if i % 3 == 0 {
                        held.pop();
                    }
                }
                held.len()
            })
        })
        .collect();
    // Each thread drops the permits it still holds when it ends.
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(shared.tracked_keys(), 0);
    assert_eq!(shared.connections_from(a), 0);
}

#[test]
fn shared_limiter_never_exceeds_the_maximum_concurrently() {
    let shared = SharedConnectionLimiter::new(ConnectionLimiter::new(Some(10), None).unwrap());
    let a = ip("203.0.113.11");
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let shared = shared.clone();
            let tx = tx.clone();
            thread::spawn(move || {
                let held: Vec<_> = (0..10)
                    .filter_map(|_| shared.try_open(Some(a)).ok())
                    .collect();
                tx.send(held).unwrap();
            })
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    let all: Vec<_> = rx.iter().flatten().collect();
    assert_eq!(all.len(), 10);
    assert_eq!(shared.connections_from(a), 10);
    drop(all);
    assert_eq!(shared.tracked_keys(), 0);
}

#[test]
fn total_cap_counts_every_connection_and_releases_on_drop() {
    let shared = SharedConnectionLimiter::new(
        ConnectionLimiter::new(Some(1), None)
            .unwrap()
            .max_connections(Some(2))
            .unwrap(),
    );
    let a = ip("203.0.113.20");
    let first = shared.try_open(Some(a)).unwrap();
    // Refused per address: not counted in the total either.
    assert_eq!(
        shared.try_open(Some(a)).unwrap_err().close_code(),
        Some(subs_protocol::close::TOO_MANY_REQUESTS)
    );
    assert_eq!(shared.open_connections(), 1);
    let unknown = shared.try_open(None).unwrap(); // no address: counted in the total
    assert_eq!(shared.open_connections(), 2);
    let refused = shared.try_open(Some(ip("203.0.113.21"))).unwrap_err();
    assert_eq!(
        refused,
        Rejection::try_again_later(messages::SERVER_AT_CAPACITY)
    );
    assert_eq!(refused.close_code(), Some(1013));
    assert_eq!(refused.http_status(), 503);
    assert_eq!(
        refused.retry_after(),
        Some(messages::AT_CAPACITY_RETRY_AFTER)
    );
    // The refused address was not counted: releasing one frees its place.
    assert_eq!(shared.connections_from(ip("203.0.113.21")), 0);
    drop(unknown);
    assert_eq!(shared.open_connections(), 1);
    let second = shared.try_open(Some(ip("203.0.113.21"))).unwrap();
    drop((first, second));
    assert_eq!(shared.open_connections(), 0);
    assert_eq!(shared.tracked_keys(), 0);
    assert!(matches!(
        ConnectionLimiter::new(None, None)
            .unwrap()
            .max_connections(Some(0)),
        Err(Error::ZeroLimit { .. })
    ));
}

#[test]
fn refusals_map_to_http_statuses() {
    assert_eq!(Rejection::too_many_requests("x").http_status(), 429);
    assert_eq!(Rejection::too_many_requests("x").retry_after(), None);
    assert_eq!(Rejection::forbidden("x").http_status(), 403);
    assert_eq!(Rejection::bad_request("x").http_status(), 400);
    assert_eq!(Rejection::try_again_later("x").http_status(), 503);
}
