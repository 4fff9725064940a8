//! Conformance cases for attempt limits (sign-in and sign-up throttling).

use time::Duration;

use super::{Fixture, open};
use crate::store::{AttemptEnd, AttemptLimit, AttemptStart};

/// Attempts hold every limit while they run, so concurrent ones stop at
/// the limit; failed ones count until their window ends, successful ones
/// give their hold back; the first limit reached is the one named.
pub async fn attempts_are_held_when_they_begin_and_counted_when_they_fail<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    let window = 900;
    let limits = [
        AttemptLimit::new(&["address and email", "192.0.2.1", "a@example.com"], 3),
        AttemptLimit::new(&["address", "192.0.2.1"], 5),
    ];
    // Ten at once: three begin.
    let starts = futures_util::future::join_all((0..10).map(|_| store.begin_attempt(&limits, window))).await;
    let mut began = Vec::new();
    for start in starts {
        match start.unwrap() {
            AttemptStart::Began(attempt) => began.push(attempt),
            AttemptStart::TooMany {
                limit,
                retry_after_secs,
            } => {
                assert_eq!(limit, 0);
                assert!((1..=window).contains(&retry_after_secs), "{retry_after_secs}");
            }
        }
    }
    assert_eq!(began.len(), 3);
    // One succeeds (refunded), two fail (counted): one more may begin.
    let mut ends = [AttemptEnd::Refunded, AttemptEnd::Counted, AttemptEnd::Counted].into_iter();
    for attempt in began {
        store.end_attempt(attempt, ends.next().unwrap()).await.unwrap();
    }
    let AttemptStart::Began(fourth) = store.begin_attempt(&limits, window).await.unwrap() else {
        panic!("a refunded attempt gives its place back");
    };
    store.end_attempt(fourth, AttemptEnd::Counted).await.unwrap();
    assert!(matches!(
        store.begin_attempt(&limits, window).await.unwrap(),
        AttemptStart::TooMany { limit: 0, .. }
    ));
    // Another email from the same address counts against the address.
    let other = [
        AttemptLimit::new(&["address and email", "192.0.2.1", "b@example.com"], 3),
        AttemptLimit::new(&["address", "192.0.2.1"], 5),
    ];
    for expected in [true, true, false] {
        match store.begin_attempt(&other, window).await.unwrap() {
            AttemptStart::Began(attempt) => {
                assert!(expected);
                store.end_attempt(attempt, AttemptEnd::Counted).await.unwrap();
            }
            AttemptStart::TooMany { limit, .. } => {
                assert!(!expected);
                assert_eq!(limit, 1, "the address's limit");
            }
        }
    }
    // The next window starts over.
    clock.advance(Duration::seconds(window as i64));
    assert!(matches!(
        store.begin_attempt(&limits, window).await.unwrap(),
        AttemptStart::Began(_)
    ));
    // A network is known to an email only once it signed in from there.
    assert!(!store.knows_network("a@example.com", "192.0.2.1").await.unwrap());
    store.remember_network("a@example.com", "192.0.2.1").await.unwrap();
    assert!(store.knows_network("a@example.com", "192.0.2.1").await.unwrap());
    assert!(!store.knows_network("b@example.com", "192.0.2.1").await.unwrap());
}
