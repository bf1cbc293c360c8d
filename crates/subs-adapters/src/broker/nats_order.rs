//! Stream order for JetStream's republished events.
//!
//! JetStream numbers an event when it stores it, but republishes it from
//! the goroutine of the connection that published it: events of two
//! instances publishing at once can reach a subscriber in another order than
//! their sequence numbers (seen: 9 before 6). Every session hands each
//! position out once and in order, so an event arriving behind a later one
//! would be taken for a duplicate and lost. The republish names, for each
//! event, the sequence of the previous event stored on the same subject
//! (`Nats-Last-Sequence`); a history stream is one subject, so the chain of
//! predecessors gives the order back: an event whose predecessor has not
//! arrived waits for it, at most [`HOLD`] (a predecessor lost on the way
//! would otherwise hold its stream up for good).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// How long an event waits for its predecessor. Reordered republishes come
/// microseconds to milliseconds apart; a predecessor missing for this long
/// was lost (core NATS drops messages to a slow subscriber), and its
/// successors go on without it.
pub(crate) const HOLD: Duration = Duration::from_millis(500);

/// The header JetStream's republish sets to the sequence of the previous
/// event stored on the same subject (0 if none, or deleted).
pub(crate) const LAST_SEQUENCE_HEADER: &str = "Nats-Last-Sequence";

/// The header JetStream's republish sets to the event's original subject.
pub(crate) const SUBJECT_HEADER: &str = "Nats-Subject";

/// Where a republished event sits in its subject's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// The original subject (one history stream).
    pub(crate) subject: String,
    /// Its sequence number.
    pub(crate) sequence: u64,
    /// The sequence of the event stored before it on the same subject.
    pub(crate) previous: u64,
}

impl Link {
    /// The link a republished event's headers describe, if they do.
    pub(crate) fn of(headers: Option<&async_nats::HeaderMap>) -> Option<Self> {
        let headers = headers?;
        let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
        Some(Self {
            subject: headers.get(SUBJECT_HEADER)?.as_str().to_owned(),
            sequence: number(super::nats_history::SEQUENCE_HEADER)?,
            previous: number(LAST_SEQUENCE_HEADER)?,
        })
    }
}

/// One subject's chain: the last sequence handed on, and the events waiting
/// for their predecessor, by that predecessor's sequence.
#[derive(Debug)]
struct Chain<T> {
    last: u64,
    waiting: BTreeMap<u64, Waiting<T>>,
}

#[derive(Debug)]
struct Waiting<T> {
    sequence: u64,
    item: T,
    since: Instant,
}

/// Puts republished events back in the order of their sequence numbers,
/// per subject. What it hands on is in order as long as no predecessor is
/// lost; an event older than what was handed on (a duplicate) passes
/// through at once, for the session's once-only check.
#[derive(Debug)]
pub(crate) struct Resequencer<T> {
    chains: HashMap<String, Chain<T>>,
}

impl<T> Default for Resequencer<T> {
    fn default() -> Self {
        Self {
            chains: HashMap::new(),
        }
    }
}

impl<T> Resequencer<T> {
    /// Takes one event; answers the events that can go on now, in order.
    pub(crate) fn accept(&mut self, link: Link, item: T, now: Instant) -> Vec<T> {
        let Some(chain) = self.chains.get_mut(&link.subject) else {
            // The first event of a subject since the subscription: nothing
            // before it is expected live.
            self.chains.insert(
                link.subject,
                Chain {
                    last: link.sequence,
                    waiting: BTreeMap::new(),
                },
            );
            return vec![item];
        };
        if link.sequence <= chain.last || link.previous == 0 || link.previous < chain.last {
            // Already past it, or a chain JetStream broke (a deleted
            // predecessor): nothing to wait for.
            chain.last = chain.last.max(link.sequence);
            let mut out = vec![item];
            chain.release_successors(&mut out);
            return out;
        }
        if link.previous == chain.last {
            chain.last = link.sequence;
            let mut out = vec![item];
            chain.release_successors(&mut out);
            return out;
        }
        chain.waiting.insert(
            link.previous,
            Waiting {
                sequence: link.sequence,
                item,
                since: now,
            },
        );
        Vec::new()
    }

    /// When the oldest waiting event stops waiting, if any waits.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.chains
            .values()
            .flat_map(|chain| chain.waiting.values())
            .map(|waiting| waiting.since + HOLD)
            .min()
    }

    /// Hands on, in order, the events of every chain where one has waited
    /// [`HOLD`] for its predecessor: that predecessor is taken as lost.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        for chain in self.chains.values_mut() {
            if chain
                .waiting
                .values()
                .any(|waiting| waiting.since + HOLD <= now)
            {
                let mut waiting: Vec<Waiting<T>> =
                    std::mem::take(&mut chain.waiting).into_values().collect();
                waiting.sort_by_key(|waiting| waiting.sequence);
                for waiting in waiting {
                    chain.last = chain.last.max(waiting.sequence);
                    out.push(waiting.item);
                }
            }
        }
        out
    }
}

impl<T> Chain<T> {
    /// Hands on the events that were waiting for the last one handed on.
    fn release_successors(&mut self, out: &mut Vec<T>) {
        while let Some(next) = self.waiting.remove(&self.last) {
            self.last = next.sequence;
            out.push(next.item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(sequence: u64, previous: u64) -> Link {
        Link {
            subject: "h.t._".into(),
            sequence,
            previous,
        }
    }

    #[test]
    fn events_that_arrive_out_of_order_go_on_in_order() {
        let now = Instant::now();
        let mut order = Resequencer::default();
        assert_eq!(order.accept(link(5, 4), 5, now), [5]);
        // 6 and 9 were stored in this order (9's predecessor is 6), and 9's
        // republish came first.
        assert_eq!(order.accept(link(9, 6), 9, now), Vec::<u64>::new());
        assert_eq!(order.deadline(), Some(now + HOLD));
        assert_eq!(order.accept(link(6, 5), 6, now), [6, 9]);
        assert_eq!(order.deadline(), None);
        assert_eq!(order.accept(link(10, 9), 10, now), [10]);
    }

    #[test]
    fn subjects_are_ordered_apart() {
        let now = Instant::now();
        let mut order = Resequencer::default();
        let other = |sequence, previous| Link {
            subject: "h.t.other".into(),
            sequence,
            previous,
        };
        assert_eq!(order.accept(link(1, 0), 1, now), [1]);
        assert_eq!(order.accept(other(2, 0), 2, now), [2]);
        // 4 follows 3 on the first subject; the other subject is not held.
        assert_eq!(order.accept(link(4, 3), 4, now), Vec::<u64>::new());
        assert_eq!(order.accept(other(5, 2), 5, now), [5]);
        assert_eq!(order.accept(link(3, 1), 3, now), [3, 4]);
    }

    #[test]
    fn a_lost_predecessor_holds_its_successors_only_until_the_deadline() {
        let now = Instant::now();
        let mut order = Resequencer::default();
        assert_eq!(order.accept(link(1, 0), 1, now), [1]);
        assert_eq!(order.accept(link(3, 2), 3, now), Vec::<u64>::new());
        assert_eq!(order.accept(link(4, 3), 4, now), Vec::<u64>::new());
        assert!(order.expire(now + HOLD / 2).is_empty());
        assert_eq!(order.expire(now + HOLD), [3, 4]);
        // The chain goes on after them; 2, if it ever comes, passes through
        // (the session's once-only check decides).
        assert_eq!(order.accept(link(5, 4), 5, now + HOLD), [5]);
        assert_eq!(order.accept(link(2, 1), 2, now + HOLD), [2]);
    }

    #[test]
    fn duplicates_and_broken_chains_pass_at_once() {
        let now = Instant::now();
        let mut order = Resequencer::default();
        assert_eq!(order.accept(link(7, 6), 7, now), [7]);
        assert_eq!(order.accept(link(7, 6), 7, now), [7], "a duplicate");
        // A predecessor JetStream deleted (0) or older than the last handed on.
        assert_eq!(order.accept(link(9, 0), 9, now), [9]);
        assert_eq!(order.accept(link(11, 8), 11, now), [11]);
    }
}
