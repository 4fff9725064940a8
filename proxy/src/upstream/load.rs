//! What each replica of a `load_aware` backend reports about its own load:
//! its Prometheus `/metrics` (vLLM's names) read every [`SCRAPE_EVERY`] by
//! a task that lives as long as the catalog revision's [`Upstream`], and
//! the score a pick compares. Parsing and scoring are pure functions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use maas_protocol::model_metrics::{Reading, http_body, parse_metrics};
use maas_store::model::Saturation;

use super::Upstream;

/// How often each replica's `/metrics` is read.
pub const SCRAPE_EVERY: Duration = Duration::from_millis(200);
/// Metrics older than this are not trusted: picks fall back to requests
/// in flight.
pub const STALE_AFTER_MS: u64 = 1_000;
/// Longest a scrape may take, and most of an answer read.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_METRICS_BYTES: usize = 4 << 20;

/// A replica's load as it last reported it.
#[derive(Debug, Default)]
pub struct ReplicaLoad {
    waiting: AtomicU32,
    /// Requests waiting in this reading and the one before (the fewer):
    /// what saturation goes by, since a step-based server shows the
    /// requests that arrived during its current step as waiting until the
    /// next one, which is no sign of a full replica.
    lasting_waiting: AtomicU32,
    running: AtomicU32,
    /// How many requests the replica runs at once, as its readings show:
    /// what it ran while a queue lasted (it could not run more: its
    /// `max_num_seqs`, or what its KV cache held), else the most it has
    /// run. 0 until it ran something.
    running_cap: AtomicU32,
    /// KV-cache use, in thousandths.
    kv_permille: AtomicU32,
    /// When it was read ([`Upstream`]'s clock, ms); 0: never.
    read_at_ms: AtomicU64,
    /// This proxy's requests in flight at the replica when it was read.
    in_flight_at_read: AtomicU32,
}

impl ReplicaLoad {
    #[cfg(test)]
    pub(super) fn store(&self, reading: Reading, now_ms: u64) {
        self.store_with_in_flight(reading, now_ms, 0);
    }

    /// A reading taken while this proxy had `in_flight` requests there.
    pub(super) fn store_with_in_flight(&self, reading: Reading, now_ms: u64, in_flight: u32) {
        self.in_flight_at_read.store(in_flight, Ordering::Relaxed);
        // Without a fresh reading before (none yet, or the metrics were
        // down a while), this one stands alone.
        let before = if self.fresh(now_ms).is_some() {
            self.waiting.load(Ordering::Relaxed)
        } else {
            reading.waiting
        };
        let lasting = before.min(reading.waiting);
        self.lasting_waiting.store(lasting, Ordering::Relaxed);
        let cap = if lasting > 0 {
            reading.running
        } else {
            self.running_cap.load(Ordering::Relaxed).max(reading.running)
        };
        self.running_cap.store(cap, Ordering::Relaxed);
        self.waiting.store(reading.waiting, Ordering::Relaxed);
        self.running.store(reading.running, Ordering::Relaxed);
        let permille = (reading.kv_usage.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.kv_permille.store(permille, Ordering::Relaxed);
        self.read_at_ms.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// How old the last reading is at `now_ms`, if there was one.
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        let at = self.read_at_ms.load(Ordering::Relaxed);
        (at != 0).then(|| now_ms.saturating_sub(at))
    }

    /// The last reading, if it is fresh at `now_ms`.
    pub fn fresh(&self, now_ms: u64) -> Option<Reading> {
        let at = self.read_at_ms.load(Ordering::Relaxed);
        (at != 0 && now_ms.saturating_sub(at) <= STALE_AFTER_MS).then(|| Reading {
            waiting: self.waiting.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            kv_usage: f64::from(self.kv_permille.load(Ordering::Relaxed)) / 1000.0,
        })
    }
}

/// What saturation is judged by: a replica's last fresh reading, with
/// the queue that lasted over two readings, how many requests it runs at
/// once (learnt from its readings), and this proxy's requests in
/// flight there when it was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSnapshot {
    pub reading: Reading,
    pub running_cap: u32,
    pub in_flight_then: u32,
}

impl ReplicaLoad {
    /// The replica's load as saturation judges it, if fresh at `now_ms`.
    pub fn snapshot(&self, now_ms: u64) -> Option<LoadSnapshot> {
        let reading = Reading {
            waiting: self.lasting_waiting.load(Ordering::Relaxed),
            ..self.fresh(now_ms)?
        };
        Some(LoadSnapshot {
            reading,
            running_cap: self.running_cap.load(Ordering::Relaxed),
            in_flight_then: self.in_flight_at_read.load(Ordering::Relaxed),
        })
    }
}

/// Whether a replica is saturated: this proxy has `saturation.in_flight`
/// requests there, or by its fresh `snapshot` it has `saturation.waiting`
/// requests waiting or `saturation.kv_cache_percent` of its KV cache in
/// use. Between two readings the queue follows what this proxy did:
/// requests sent since fill the places the replica had free (it ran fewer
/// than its running cap) and then wait; requests that ended since let a
/// waiting one run. So a burst released on one reading stops at the
/// threshold, and a replica with free places is not judged full because
/// one request went to it since it was read. Other proxies' requests show
/// at the next reading.
pub fn is_saturated(saturation: &Saturation, snapshot: Option<LoadSnapshot>, in_flight: u32) -> bool {
    if saturation.in_flight.is_some_and(|cap| in_flight >= cap) {
        return true;
    }
    let Some(LoadSnapshot {
        reading,
        running_cap,
        in_flight_then,
    }) = snapshot
    else {
        return false;
    };
    let sent_since = i64::from(in_flight) - i64::from(in_flight_then);
    // The cap is never below what ran (it is raised to it on every reading).
    let free = i64::from(running_cap.saturating_sub(reading.running));
    // Sent since: past the free places they wait; ended since: one fewer waits.
    let queued_since = if sent_since > 0 {
        (sent_since - free).max(0)
    } else {
        sent_since
    };
    let waiting = i64::from(reading.waiting) + queued_since;
    waiting >= i64::from(saturation.waiting) || reading.kv_usage * 100.0 >= f64::from(saturation.kv_cache_percent)
}

/// Lower is better: a waiting request weighs 4, a full KV cache 8 (it will
/// make requests wait soon), and each request this proxy sent since (or
/// has in flight) 1, so picks between two readings do not all land on
/// the same replica.
pub fn score(reading: Reading, in_flight: u32) -> u64 {
    u64::from(reading.waiting) * 4 + (reading.kv_usage.clamp(0.0, 1.0) * 8.0).round() as u64 + u64::from(in_flight)
}

/// Reads every plain-HTTP replica's `/metrics` every [`SCRAPE_EVERY`]
/// while `upstream` is in use (the task ends once the catalog revision
/// that holds it is gone). TLS replicas are not read: their picks fall
/// back to requests in flight.
pub fn spawn_scraper(upstream: &Arc<Upstream>) {
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SCRAPE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(upstream) = weak.upgrade() else { return };
            // A few replicas, one after another, each read bounded by SCRAPE_TIMEOUT.
            for replica in upstream.replicas.iter().filter(|replica| !replica.tls) {
                let in_flight = replica.in_flight.load(Ordering::Relaxed);
                let text = read_metrics(replica.address, &replica.authority).await;
                if let Some(reading) = text.as_deref().and_then(parse_metrics) {
                    replica.load.store_with_in_flight(reading, upstream.now_ms(), in_flight);
                }
            }
            // A replica may have room now (or its ejection ended).
            upstream.release();
        }
    });
}

/// `GET /metrics` over HTTP/1.1, its body when the answer is 200.
async fn read_metrics(address: SocketAddr, authority: &str) -> Option<String> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_METRICS_BYTES as u64)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        http_body(&answer)
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, read).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_weigh_queues_over_cache_over_own_requests() {
        let idle = Reading::default();
        let queued = Reading {
            waiting: 1,
            ..Reading::default()
        };
        let full = Reading {
            kv_usage: 1.0,
            ..Reading::default()
        };
        assert!(score(idle, 3) < score(queued, 0));
        assert!(score(queued, 0) < score(full, 0));
        assert_eq!(score(idle, 2), 2);
    }

    #[test]
    fn saturation_follows_the_reading_and_what_this_proxy_sent_since() {
        let saturation = Saturation {
            waiting: 2,
            kv_cache_percent: 90,
            in_flight: Some(10),
        };
        // Eight running, all it runs at once.
        let full = |waiting, kv_usage| {
            Some(LoadSnapshot {
                reading: Reading {
                    waiting,
                    running: 8,
                    kv_usage,
                },
                running_cap: 8,
                in_flight_then: 4,
            })
        };
        assert!(!is_saturated(&saturation, None, 9), "no metrics: the cap alone");
        assert!(is_saturated(&saturation, None, 10));
        assert!(!is_saturated(&saturation, full(1, 0.5), 4));
        assert!(is_saturated(&saturation, full(2, 0.5), 4), "its queue");
        assert!(is_saturated(&saturation, full(0, 0.9), 4), "its KV cache");
        // One waiting, and one more sent since: two waiting by now.
        assert!(is_saturated(&saturation, full(1, 0.5), 5));
        // Two waiting, but one of this proxy's requests ended since: one waits.
        assert!(!is_saturated(&saturation, full(2, 0.5), 3));
        // Five running of the eight it has run: three free places.
        let roomy = Some(LoadSnapshot {
            reading: Reading {
                waiting: 0,
                running: 5,
                kv_usage: 0.5,
            },
            running_cap: 8,
            in_flight_then: 4,
        });
        assert!(
            !is_saturated(&saturation, roomy, 4 + 3),
            "sent since fill the free places"
        );
        assert!(!is_saturated(&saturation, roomy, 4 + 4), "then one waits");
        assert!(is_saturated(&saturation, roomy, 4 + 5), "then two");
        assert!(!is_saturated(&saturation, roomy, 1), "ended since");
    }

    #[test]
    fn the_running_cap_is_what_ran_while_a_queue_lasted_else_the_most_that_ran() {
        let load = ReplicaLoad::default();
        let reading = |waiting, running| Reading {
            waiting,
            running,
            kv_usage: 0.1,
        };
        let cap = |load: &ReplicaLoad, now| load.snapshot(now).map(|s| s.running_cap);
        load.store(reading(0, 3), 100);
        assert_eq!(cap(&load, 100), Some(3), "three ran at once");
        load.store(reading(0, 6), 300);
        load.store(reading(0, 2), 500);
        assert_eq!(cap(&load, 500), Some(6), "the most that ran");
        load.store(reading(2, 5), 700);
        assert_eq!(cap(&load, 700), Some(6), "a queue in one reading: a step's arrivals");
        load.store(reading(1, 5), 900);
        assert_eq!(cap(&load, 900), Some(5), "a queue that lasted: five is all it runs");
        load.store(reading(0, 7), 1100);
        assert_eq!(cap(&load, 1100), Some(7), "it ran more after all");
    }

    #[test]
    fn saturation_goes_by_a_queue_that_lasts_two_readings() {
        let load = ReplicaLoad::default();
        let waiting = |waiting| Reading {
            waiting,
            running: 8,
            kv_usage: 0.1,
        };
        let judged = |load: &ReplicaLoad, now| load.snapshot(now).map(|s| s.reading.waiting);
        load.store(waiting(3), 100);
        assert_eq!(judged(&load, 100), Some(3), "a first reading stands alone");
        load.store(waiting(0), 300);
        load.store(waiting(2), 500);
        assert_eq!(judged(&load, 500), Some(0), "requests that came during a step");
        assert_eq!(load.fresh(500).map(|r| r.waiting), Some(2), "scores see the raw queue");
        load.store(waiting(4), 700);
        assert_eq!(judged(&load, 700), Some(2), "a queue that stayed");
        load.store(waiting(0), 900);
        load.store(waiting(5), 900 + STALE_AFTER_MS + 1);
        assert_eq!(
            judged(&load, 900 + STALE_AFTER_MS + 1),
            Some(5),
            "after a gap in the metrics, a reading stands alone"
        );
    }

    #[test]
    fn readings_go_stale() {
        let load = ReplicaLoad::default();
        assert_eq!(load.fresh(10), None, "never read");
        load.store(Reading::default(), 100);
        assert!(load.fresh(100 + STALE_AFTER_MS).is_some());
        assert_eq!(load.fresh(101 + STALE_AFTER_MS), None);
    }
}
