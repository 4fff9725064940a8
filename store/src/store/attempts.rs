//! Attempt limits: how many sign-ins (or sign-ups) a client, a client and
//! an email, or an email alone may try in a window, counted in the store so
//! every portal replica on one Redis shares the counts.
//!
//! An attempt is held on every limit **when it begins** (a reservation of
//! one), so a burst of concurrent guesses cannot all run past a limit
//! before the first one fails; a failed attempt then counts for the rest
//! of its window and a successful one gives its hold back. Keys are
//! SHA-256 digests of what they count, so their size does not depend on
//! what a client sends, and they expire with their window.

use sha2::{Digest, Sha256};

use super::Store;
use crate::backend::{CheckOutcome, CounterAdd, CounterCheck, CounterKey, Reservation};
use crate::error::StoreResult;
use crate::ids::{hex, random_bytes};
use crate::limits::Grant;

/// Every attempt counter lives in this shard (one Redis Cluster slot): the
/// checks of one attempt are atomic together.
const SHARD: &str = "attempts";
/// How long an attempt may run before its hold lapses by itself (a
/// replica that died mid-attempt); far longer than a password check.
const ATTEMPT_TTL_SECS: i64 = 120;
/// How long a client's network stays known for an email after a
/// successful sign-in from it.
const KNOWN_NETWORK_SECS: u64 = 90 * 86_400;

/// One limit an attempt counts against: at most `max` attempts per window
/// for what `parts` name (e.g. `["address", network]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLimit {
    parts: Vec<String>,
    pub max: u64,
}

impl AttemptLimit {
    pub fn new<S: AsRef<str>>(parts: &[S], max: u64) -> AttemptLimit {
        AttemptLimit {
            parts: parts.iter().map(|p| p.as_ref().to_owned()).collect(),
            max,
        }
    }

    /// The counter's name in `window` (its start, unix seconds): a digest,
    /// whatever the parts hold.
    fn counter(&self, window_start: i64) -> CounterKey {
        CounterKey {
            shard: SHARD.to_owned(),
            name: [
                "try:",
                &digest(&self.parts),
                ":",
                itoa::Buffer::new().format(window_start),
            ]
            .concat(),
        }
    }
}

/// An attempt that began: end it with [`Store::end_attempt`].
#[derive(Debug, Clone)]
pub struct Attempt {
    hold_id: String,
    counters: Vec<CounterKey>,
    window_secs: u64,
}

/// Whether an attempt may begin.
#[derive(Debug, Clone)]
pub enum AttemptStart {
    Began(Attempt),
    /// Limit `limit` (an index into the limits asked about) is reached;
    /// its window ends in `retry_after_secs`.
    TooMany {
        limit: usize,
        retry_after_secs: u64,
    },
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Counts until its window ends (a wrong password; every sign-up).
    Counted,
    /// Gives its hold back (a successful sign-in).
    Refunded,
}

fn digest(parts: &[String]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize()[..16])
}

impl Store {
    /// Begins an attempt against every limit of `limits`, in fixed windows
    /// of `window_secs`, or says which limit is reached (and holds none).
    pub async fn begin_attempt(&self, limits: &[AttemptLimit], window_secs: u64) -> StoreResult<AttemptStart> {
        let now = self.clock.now().unix_timestamp();
        let window = i64::try_from(window_secs.max(1)).unwrap_or(i64::MAX);
        let window_start = now - now.rem_euclid(window);
        let counters: Vec<CounterKey> = limits.iter().map(|l| l.counter(window_start)).collect();
        let checks: Vec<CounterCheck> = limits
            .iter()
            .zip(&counters)
            .map(|(limit, key)| CounterCheck {
                key: key.clone(),
                max: limit.max,
                add: 0,
                hold: 1,
                grant_rate: 0,
            })
            .collect();
        let hold_id = hex(&random_bytes::<12>());
        let reservation = Reservation {
            id: hold_id.clone(),
            expires_at: now.saturating_add(ATTEMPT_TTL_SECS),
            grant: Grant { max: 0, min: 0 },
        };
        match self
            .backend
            .check_and_add(&checks, &[], now, Some(&reservation))
            .await?
        {
            CheckOutcome::Admitted { .. } => Ok(AttemptStart::Began(Attempt {
                hold_id,
                counters,
                window_secs: window_secs.max(1),
            })),
            CheckOutcome::Rejected { index, .. } => Ok(AttemptStart::TooMany {
                limit: index,
                retry_after_secs: u64::try_from(window_start.saturating_add(window) - now)
                    .unwrap_or(1)
                    .max(1),
            }),
        }
    }

    /// Ends `attempt`: a counted one stays on every limit until its
    /// window ends; a refunded one gives its hold back.
    pub async fn end_attempt(&self, attempt: Attempt, end: AttemptEnd) -> StoreResult<()> {
        let adds: Vec<CounterAdd> = match end {
            AttemptEnd::Refunded => Vec::new(),
            AttemptEnd::Counted => attempt
                .counters
                .into_iter()
                .map(|key| CounterAdd {
                    key,
                    by: 1,
                    // The window's counter outlives the window a little,
                    // so a late end still lands in it.
                    ttl_secs: Some(attempt.window_secs.saturating_mul(2)),
                })
                .collect(),
        };
        let now = self.clock.now().unix_timestamp();
        self.backend.settle(SHARD, &attempt.hold_id, &adds, now, false).await?;
        Ok(())
    }

    /// Remembers that `email` signed in from `network`, which then is no
    /// stranger to it for a while (limits per email spare it).
    pub async fn remember_network(&self, email: &str, network: &str) -> StoreResult<()> {
        let key = known_network_key(email, network);
        self.backend.put_ephemeral(&key, vec![1], KNOWN_NETWORK_SECS).await
    }

    /// Whether `email` signed in from `network` within the last 90 days.
    pub async fn knows_network(&self, email: &str, network: &str) -> StoreResult<bool> {
        Ok(self
            .backend
            .get_ephemeral(&known_network_key(email, network))
            .await?
            .is_some())
    }
}

fn known_network_key(email: &str, network: &str) -> String {
    ["known-network:", &digest(&[email.to_owned(), network.to_owned()])].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_do_not_grow_with_what_they_count() {
        let short = AttemptLimit::new(&["address", "192.0.2.1"], 5).counter(0);
        let huge = AttemptLimit::new(&["email", &"x".repeat(2 << 20)], 5).counter(0);
        assert_eq!(short.name.len(), huge.name.len());
        assert!(huge.name.len() < 64, "{}", huge.name);
        // Parts are kept apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            AttemptLimit::new(&["ab", "c"], 1).counter(0),
            AttemptLimit::new(&["a", "bc"], 1).counter(0)
        );
        assert_ne!(
            AttemptLimit::new(&["a"], 1).counter(0),
            AttemptLimit::new(&["a"], 1).counter(900)
        );
    }
}
