//! Operation limits: each limit allowed at its maximum, refused above it.

use subs_security::{Limit, LimitExceeded, OperationFacts, OperationLimits, Rejection};

fn ok_facts() -> OperationFacts {
    OperationFacts {
        depth: 12,
        aliases: 30,
        root_fields: 20,
        directives: 50,
        cost: 1000,
        document_bytes: 32 * 1024,
    }
}

#[test]
fn defaults_allow_values_equal_to_the_maximum() {
    let limits = OperationLimits::default();
    assert_eq!(limits.max_depth, Some(12));
    assert_eq!(limits.max_aliases, Some(30));
    assert_eq!(limits.max_root_fields, Some(20));
    assert_eq!(limits.max_directives, Some(50));
    assert_eq!(limits.max_cost, Some(1000));
    assert_eq!(limits.max_document_bytes, Some(32768));
    assert_eq!(limits.check(&ok_facts()), Ok(()));
    assert_eq!(limits.check(&OperationFacts::default()), Ok(()));
}

#[test]
fn each_limit_has_its_exact_message() {
    let limits = OperationLimits::default();
    let cases: [(OperationFacts, Limit, &str); 6] = [
        (
            OperationFacts {
                depth: 15,
                ..ok_facts()
            },
            Limit::Depth,
            "operation depth 15 exceeds the maximum of 12",
        ),
        (
            OperationFacts {
                aliases: 31,
                ..ok_facts()
            },
            Limit::Aliases,
            "alias count 31 exceeds the maximum of 30",
        ),
        (
            OperationFacts {
                root_fields: 21,
                ..ok_facts()
            },
            Limit::RootFields,
            "root field count 21 exceeds the maximum of 20",
        ),
        (
            OperationFacts {
                directives: 51,
                ..ok_facts()
            },
            Limit::Directives,
            "directive count 51 exceeds the maximum of 50",
        ),
        (
            OperationFacts {
                cost: 1001,
                ..ok_facts()
            },
            Limit::Cost,
            "operation cost 1001 exceeds the maximum of 1000",
        ),
        (
            OperationFacts {
                document_bytes: 40000,
                ..ok_facts()
            },
            Limit::DocumentBytes,
            "document size of 40000 bytes exceeds the maximum of 32768 bytes",
        ),
    ];
    for (facts, limit, message) in cases {
        let err = limits.check(&facts).unwrap_err();
        assert_eq!(err.limit, limit);
        assert_eq!(err.to_string(), message);
        assert_eq!(Rejection::from(err), Rejection::graphql(message));
    }
}

#[test]
fn document_size_is_reported_first_then_depth() {
    let facts = OperationFacts {
        depth: 100,
        cost: 100_000,
        document_bytes: 1 << 20,
        ..Default::default()
    };
    let err = OperationLimits::default().check(&facts).unwrap_err();
    assert_eq!(
        err,
        LimitExceeded {
            limit: Limit::DocumentBytes,
            value: 1 << 20,
            max: 32768
        }
    );
    let err = OperationLimits::default()
        .max_document_bytes(None)
        .check(&facts)
        .unwrap_err();
    assert_eq!(err.limit, Limit::Depth);
}

#[test]
fn limits_can_be_raised_or_turned_off() {
    let facts = OperationFacts {
        depth: 15,
        cost: 5000,
        ..Default::default()
    };
    let limits = OperationLimits::default().max_depth(20).max_cost(None);
    assert_eq!(limits.check(&facts), Ok(()));
    let huge = OperationFacts {
        depth: usize::MAX,
        aliases: usize::MAX,
        root_fields: usize::MAX,
        directives: usize::MAX,
        cost: usize::MAX,
        document_bytes: usize::MAX,
    };
    assert_eq!(OperationLimits::unlimited().check(&huge), Ok(()));
    assert_eq!(Limit::Depth.as_str(), "max_depth");
}
