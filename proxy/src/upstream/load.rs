//! What each replica of a `load_aware` backend reports about its own load:
//! its Prometheus `/metrics` (vLLM's names) read every [`SCRAPE_EVERY`] by
//! a task that lives as long as the catalog revision's [`Upstream`], and
//! the score a pick compares. Parsing and scoring are pure functions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    /// KV-cache use, in thousandths.
    kv_permille: AtomicU32,
    /// When it was read ([`Upstream`]'s clock, ms); 0: never.
    read_at_ms: AtomicU64,
    /// This proxy's requests in flight at the replica when it was read.
    in_flight_at_read: AtomicU32,
}

/// One reading of a replica's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub waiting: u32,
    pub running: u32,
    /// 0 to 1.
    pub kv_usage: f64,
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
        self.lasting_waiting
            .store(before.min(reading.waiting), Ordering::Relaxed);
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

impl ReplicaLoad {
    /// The last reading if fresh, its queue the one that lasted over two
    /// readings, with this proxy's requests in flight at the replica when
    /// it was taken: what saturation is judged by.
    pub fn fresh_with_in_flight(&self, now_ms: u64) -> Option<(Reading, u32)> {
        let reading = Reading {
            waiting: self.lasting_waiting.load(Ordering::Relaxed),
            ..self.fresh(now_ms)?
        };
        Some((reading, self.in_flight_at_read.load(Ordering::Relaxed)))
    }
}

/// Whether a replica is saturated: this proxy has `saturation.in_flight`
/// requests there, or its fresh reading (taken with `in_flight_then` of
/// this proxy's requests there) shows `saturation.waiting` requests
/// waiting or `saturation.kv_cache_percent` of its KV cache in use.
/// Requests sent since the reading count as waiting, and those that
/// ended since as having let a waiting one run: between two readings the
/// estimate follows what this proxy did, so a burst released on one
/// reading stops at the threshold rather than at the next reading.
pub fn is_saturated(saturation: &Saturation, reading: Option<(Reading, u32)>, in_flight: u32) -> bool {
    if saturation.in_flight.is_some_and(|cap| in_flight >= cap) {
        return true;
    }
    let Some((reading, in_flight_then)) = reading else {
        return false;
    };
    let waiting = i64::from(reading.waiting) + i64::from(in_flight) - i64::from(in_flight_then);
    waiting >= i64::from(saturation.waiting) || reading.kv_usage * 100.0 >= f64::from(saturation.kv_cache_percent)
}

/// Lower is better: a waiting request weighs 4, a full KV cache 8 (it will
/// make requests wait soon), and each request this proxy sent since (or
/// has in flight) 1, so picks between two readings do not all land on
/// the same replica.
pub fn score(reading: Reading, in_flight: u32) -> u64 {
    u64::from(reading.waiting) * 4 + (reading.kv_usage.clamp(0.0, 1.0) * 8.0).round() as u64 + u64::from(in_flight)
}

/// vLLM's load from a Prometheus text exposition: waiting and running
/// requests summed over its models, KV-cache use the highest of them
/// (`vllm:kv_cache_usage_perc`, or `vllm:gpu_cache_usage_perc` of older
/// vLLM). `None` when it says neither queue.
pub fn parse_metrics(text: &str) -> Option<Reading> {
    let mut reading = Reading::default();
    let mut seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let count = if value.is_finite() && value > 0.0 {
            value.min(f64::from(u32::MAX)) as u32
        } else {
            0
        };
        match name {
            "vllm:num_requests_waiting" => {
                reading.waiting = reading.waiting.saturating_add(count);
                seen = true;
            }
            "vllm:num_requests_running" => {
                reading.running = reading.running.saturating_add(count);
                seen = true;
            }
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" if value.is_finite() => {
                reading.kv_usage = reading.kv_usage.max(value);
            }
            _ => {}
        }
    }
    seen.then_some(reading)
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

/// The body of a `200` HTTP/1.1 answer, chunked or not.
pub fn http_body(answer: &[u8]) -> Option<String> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    if status.split(' ').nth(1) != Some("200") {
        return None;
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    if !chunked {
        return String::from_utf8(body.to_vec()).ok();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllms_load_and_ignores_the_rest() {
        let text = "# HELP vllm:num_requests_waiting x\n# TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{model_name=\"a\"} 3\nvllm:num_requests_waiting{model_name=\"b\"} 2.0\n\
            vllm:num_requests_running{model_name=\"a\"} 7\nvllm:kv_cache_usage_perc{model_name=\"a\"} 0.25\n\
            vllm:kv_cache_usage_perc{model_name=\"b\"} 0.5\nsim_requests_total{model=\"a\"} 99\n";
        assert_eq!(
            parse_metrics(text),
            Some(Reading {
                waiting: 5,
                running: 7,
                kv_usage: 0.5
            })
        );
        let old = "vllm:num_requests_waiting 1\nvllm:gpu_cache_usage_perc 0.9\n";
        assert_eq!(parse_metrics(old).map(|r| r.kv_usage), Some(0.9));
        assert_eq!(parse_metrics("process_cpu_seconds_total 3\n"), None, "not a vLLM");
        assert_eq!(
            parse_metrics("vllm:num_requests_waiting NaN\nvllm:num_requests_waiting -4\ngarbage\n"),
            Some(Reading::default())
        );
    }

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
    fn http_bodies_plain_and_chunked() {
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").as_deref(),
            Some("hello")
        );
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n")
                .as_deref(),
            Some("hello")
        );
        assert_eq!(http_body(b"HTTP/1.1 404 Not Found\r\n\r\nno"), None);
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
        assert_eq!(http_body(b"garbage"), None);
    }

    #[test]
    fn saturation_follows_the_reading_and_what_this_proxy_sent_since() {
        let saturation = Saturation {
            waiting: 2,
            kv_cache_percent: 90,
            in_flight: Some(10),
        };
        let reading = |waiting, kv_usage| Reading {
            waiting,
            running: 8,
            kv_usage,
        };
        assert!(!is_saturated(&saturation, None, 9), "no metrics: the cap alone");
        assert!(is_saturated(&saturation, None, 10));
        assert!(!is_saturated(&saturation, Some((reading(1, 0.5), 4)), 4));
        assert!(is_saturated(&saturation, Some((reading(2, 0.5), 4)), 4), "its queue");
        assert!(is_saturated(&saturation, Some((reading(0, 0.9), 4)), 4), "its KV cache");
        // One waiting, and one more sent since: two waiting by now.
        assert!(is_saturated(&saturation, Some((reading(1, 0.5), 4)), 5));
        // Two waiting, but one of this proxy's requests ended since: one waits.
        assert!(!is_saturated(&saturation, Some((reading(2, 0.5), 4)), 3));
    }

    #[test]
    fn saturation_goes_by_a_queue_that_lasts_two_readings() {
        let load = ReplicaLoad::default();
        let waiting = |waiting| Reading {
            waiting,
            running: 8,
            kv_usage: 0.1,
        };
        let judged = |load: &ReplicaLoad, now| load.fresh_with_in_flight(now).map(|(r, _)| r.waiting);
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
