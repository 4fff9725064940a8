//! Prefix affinity: requests whose prompts start with the same bytes (a
//! shared system prompt, the earliest turns of a conversation) prefer the
//! same replica, whose prefix cache then already holds those tokens. The
//! replica is chosen by rendezvous hashing over the backend's replicas in
//! catalog order, so every proxy prefers the same one; a preferred
//! replica with more than its share of requests in flight
//! ([`LOAD_FACTOR`] × the average) passes to the next in rank, so one hot
//! prefix cannot overload a replica (consistent hashing with bounded
//! loads). The key is the prompt's start ([`prefix_key`], from
//! `maas-protocol`).

pub use maas_protocol::prompt_prefix::{PREFIX_BYTES, prefix_key};

/// A replica takes a prefix's requests while it has at most this many
/// times the average requests in flight.
pub const LOAD_FACTOR: f64 = 1.25;

/// Rendezvous weight of replica `index` for prefix `key`.
fn weight(key: u64, index: usize) -> u64 {
    // SplitMix64 of the pair: well spread even for neighbouring keys.
    let mut x = key ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The replica for prefix `key` among `available` (indexes), given each
/// one's requests in flight: the highest-ranked whose load is within its
/// bound, if any. Two passes over the replicas, nothing allocated.
pub fn preferred(
    key: u64,
    available: impl Iterator<Item = usize> + Clone,
    in_flight: impl Fn(usize) -> u32,
) -> Option<usize> {
    let (count, total) = available.clone().fold((0u64, 0u64), |(count, total), i| {
        (count + 1, total + u64::from(in_flight(i)))
    });
    if count == 0 {
        return None;
    }
    // Bounded loads: room for this request too, spread evenly, times the factor.
    let bound = ((total + 1) as f64 * LOAD_FACTOR / count as f64).ceil() as u64;
    available
        .filter(|&i| u64::from(in_flight(i)) < bound)
        .max_by_key(|&i| weight(key, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_stays_on_its_replica_until_it_has_more_than_its_share() {
        let replicas = [0, 1, 2, 3];
        let idle = |_: usize| 0;
        let first = preferred(7, replicas.iter().copied(), idle).unwrap();
        assert_eq!(preferred(7, replicas.iter().copied(), idle), Some(first), "stable");
        let spread: std::collections::HashSet<usize> = (0..64)
            .filter_map(|key| preferred(key, replicas.iter().copied(), idle))
            .collect();
        assert_eq!(spread.len(), 4, "keys spread over every replica");
        // Busy beyond its bound: the next in rank takes it.
        let busy = |i: usize| if i == first { 5 } else { 0 };
        let next = preferred(7, replicas.iter().copied(), busy).unwrap();
        assert_ne!(next, first);
        // Without the preferred replica (ejected), the same next one.
        let rest: Vec<usize> = replicas.iter().copied().filter(|&i| i != first).collect();
        assert_eq!(preferred(7, rest.iter().copied(), idle), Some(next));
        assert_eq!(preferred(7, std::iter::empty(), idle), None);
    }
}
