//! Backends as the proxy reaches them: every replica URL resolved once per
//! catalog revision, a replica picked by the backend's `balance` (round
//! robin, fewest requests in flight, or least load by the replicas' own
//! metrics: [`load`]) among those not ejected, passive ejection after
//! connect errors. Connection pooling itself is Pingora's
//! (keyed by peer); idle pooled connections are dropped before the
//! backend's own idle timeout (`pool_idle_ms`, vLLM closes after 5 s).
//! A backend with `saturation:` admits requests through its gateway
//! queue ([`queue`]) when every replica is saturated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use maas_store::model::{Backend, Balance};

pub mod affinity;
mod health;
pub mod load;
pub mod queue;
pub mod report;

pub use health::spawn_prober;
pub use load::{Reading, spawn_scraper};
pub use queue::{Admission, Granted, QueueEntry, Refused};

/// How long a replica that refused a connection is skipped.
pub const EJECTION: Duration = Duration::from_secs(5);

/// One replica of a backend.
#[derive(Debug)]
pub struct Replica {
    pub address: SocketAddr,
    /// `host[:port]` as written in the URL, for the upstream Host header.
    pub authority: String,
    pub tls: bool,
    pub host: String,
    /// Milliseconds since `epoch` until which the replica is skipped.
    ejected_until: AtomicU64,
    /// Requests this proxy has at the replica now ([`InFlight`]).
    in_flight: AtomicU32,
    /// What the replica last said of its load (`load_aware` backends).
    load: load::ReplicaLoad,
    /// Down when active health checks say so (`health_check:`).
    health: health::ReplicaHealth,
    /// The last error met there and when (unix seconds), for the console.
    last_error: std::sync::Mutex<Option<(String, i64)>>,
}

impl Replica {
    /// Remembers `error` as the last one met here, now (its first 300
    /// bytes: a report, not a log).
    fn note_error(&self, mut error: String) {
        if error.len() > 300 {
            let mut end = 300;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
        let at = time::OffsetDateTime::now_utc().unix_timestamp();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((error, at));
    }
}

/// What [`Upstream::replica_state`] tells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaState {
    /// Takes requests: not ejected, not down by health checks.
    pub up: bool,
    pub in_flight: u32,
    /// Its fresh load reading (`load_aware`).
    pub reading: Option<load::Reading>,
    /// How old its last load reading is, if it ever gave one.
    pub reading_age_ms: Option<u64>,
}

/// A request at a replica, counted in its in-flight requests until dropped
/// (the request ended, or was retried elsewhere): then a request waiting
/// in the backend's queue may take its place.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(replica) = self.upstream.replicas.get(self.index) {
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.upstream.release();
    }
}

/// A backend and its replicas.
#[derive(Debug)]
pub struct Upstream {
    /// The catalog's definition it was built from: its name, `balance`,
    /// `prefix_affinity`, `saturation` (`None`: no queue) and timeouts.
    pub backend: Backend,
    pub replicas: Vec<Replica>,
    /// The path of the URLs, prepended to every request path.
    pub base_path: String,
    /// `Authorization` value for the backend's own credential, if any.
    pub authorization: Option<String>,
    queue: queue::GatewayQueue,
    next: AtomicUsize,
    epoch: Instant,
}

/// A parsed `http(s)://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<BackendUrl, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(format!("`{url}` must start with http:// or https://"));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{url}` has an unclosed IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().map_err(|_| format!("`{url}` has an invalid port"))?,
            None => default_port,
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse().map_err(|_| format!("`{url}` has an invalid port"))?,
            ),
            None => (authority.to_owned(), default_port),
        }
    };
    Ok(BackendUrl {
        tls,
        host,
        port,
        path: if path.is_empty() { "/".into() } else { path.to_owned() },
    })
}

impl Upstream {
    /// Resolves every URL of `backend`. `authorization` is the backend's
    /// credential (read from its `api_key_env`).
    pub async fn resolve(backend: &Backend, authorization: Option<String>) -> Result<Upstream, String> {
        let mut replicas = Vec::with_capacity(backend.urls.len());
        let mut base_path = None;
        for url in &backend.urls {
            let parsed = parse_url(url)?;
            let address = tokio::net::lookup_host((parsed.host.as_str(), parsed.port))
                .await
                .map_err(|e| {
                    format!(
                        "backend `{}`: cannot resolve `{}`: {e}",
                        backend.system_name, parsed.host
                    )
                })?
                .next()
                .ok_or_else(|| format!("backend `{}`: `{}` has no address", backend.system_name, parsed.host))?;
            let default_port = if parsed.tls { 443 } else { 80 };
            let authority = if parsed.port == default_port {
                parsed.host.clone()
            } else if parsed.host.contains(':') {
                format!("[{}]:{}", parsed.host, parsed.port)
            } else {
                format!("{}:{}", parsed.host, parsed.port)
            };
            base_path.get_or_insert(parsed.path.clone());
            replicas.push(Replica {
                address,
                authority,
                tls: parsed.tls,
                host: parsed.host,
                ejected_until: AtomicU64::new(0),
                in_flight: AtomicU32::new(0),
                load: load::ReplicaLoad::default(),
                health: health::ReplicaHealth::default(),
                last_error: Default::default(),
            });
        }
        if replicas.is_empty() {
            return Err(format!("backend `{}` has no URL", backend.system_name));
        }
        Ok(Upstream {
            backend: backend.clone(),
            replicas,
            base_path: base_path.unwrap_or_else(|| "/".into()),
            authorization,
            queue: queue::GatewayQueue::default(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    /// Built from the same definition and credential, its replicas at the
    /// same addresses: `other` would serve exactly as this one does.
    pub fn is_same_as(&self, other: &Upstream) -> bool {
        self.backend == other.backend
            && self.authorization == other.authorization
            && self.replicas.len() == other.replicas.len()
            && self
                .replicas
                .iter()
                .zip(&other.replicas)
                .all(|(a, b)| a.address == b.address)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The replica for the next request, by the backend's `balance`, among
    /// those not ejected: the next in turn, or the one with the fewest
    /// requests in flight (the first of them in turn). When all are
    /// ejected, the one whose ejection ends first (a failing backend is
    /// retried rather than shut off).
    pub fn pick(&self) -> usize {
        self.pick_for(None)
    }

    /// The replica for a request whose body is `body`: with
    /// `prefix_affinity`, the one its prompt's start prefers while within
    /// its share of requests in flight ([`affinity`]); else by `balance`.
    pub fn pick_for(&self, body: Option<&[u8]>) -> usize {
        let now = self.now_ms();
        self.pick_among(body, |index| self.is_available(index, now))
            .unwrap_or_else(|| {
                (0..self.replicas.len())
                    .min_by_key(|&index| self.replicas[index].ejected_until.load(Ordering::Relaxed))
                    .unwrap_or(0)
            })
    }

    /// As [`Upstream::pick_for`], among the replicas with room
    /// ([`Upstream::has_room`]); `None` when none has.
    fn pick_with_room(&self, body: Option<&[u8]>) -> Option<usize> {
        let now = self.now_ms();
        self.pick_among(body, |index| self.has_room(index, now))
    }

    /// Whether prefix affinity, among the replicas taking requests, sends
    /// a prompt with start `key` to one with room now: what a release
    /// prefers, so the replica that has room gets a prompt it caches.
    fn prefers_a_replica_with_room(&self) -> impl Fn(u64) -> bool + '_ {
        let now = self.now_ms();
        let available: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| self.is_available(i, now))
            .collect();
        let with_room: Vec<usize> = available.iter().copied().filter(|&i| self.has_room(i, now)).collect();
        move |key| {
            affinity::preferred(key, available.iter().copied(), |i| self.in_flight(i))
                .is_some_and(|i| with_room.contains(&i))
        }
    }

    /// Whether some replica takes requests and is not saturated.
    fn any_room(&self) -> bool {
        let now = self.now_ms();
        (0..self.replicas.len()).any(|index| self.has_room(index, now))
    }

    fn pick_among(&self, body: Option<&[u8]>, eligible: impl Fn(usize) -> bool + Clone) -> Option<usize> {
        let count = self.replicas.len();
        if self.backend.prefix_affinity
            && let Some(key) = body.and_then(affinity::prefix_key)
        {
            let candidates = (0..count).filter(|&index| eligible(index));
            if let Some(index) = affinity::preferred(key, candidates, |i| self.in_flight(i)) {
                return Some(index);
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut up = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(move |&index| eligible(index));
        let in_flight = |index: usize| self.replicas[index].in_flight.load(Ordering::Relaxed);
        // `min_by_key` keeps the first of equals: the one next in turn.
        match self.backend.balance {
            Balance::RoundRobin => up.next(),
            Balance::LeastRequests => up.min_by_key(|&index| in_flight(index)),
            Balance::LoadAware => {
                let load = |index: usize| self.replicas[index].load.fresh(now);
                if up.clone().all(|index| load(index).is_some()) {
                    // A reading that went stale since counts as the worst.
                    up.min_by_key(|&index| load(index).map_or(u64::MAX, |r| load::score(r, in_flight(index))))
                } else {
                    // A replica without fresh metrics: compare what this proxy knows.
                    up.min_by_key(|&index| in_flight(index))
                }
            }
        }
    }

    /// Takes requests and, on a backend with `saturation:`, is not
    /// saturated by its fresh metrics or this proxy's requests in flight
    /// ([`load::is_saturated`]).
    fn has_room(&self, index: usize, now_ms: u64) -> bool {
        if !self.is_available(index, now_ms) {
            return false;
        }
        let Some(saturation) = &self.backend.saturation else {
            return true;
        };
        let replica = &self.replicas[index];
        let in_flight = replica.in_flight.load(Ordering::Relaxed);
        !load::is_saturated(saturation, replica.load.snapshot(now_ms), in_flight)
    }

    /// Counts a request at replica `index` until the guard is dropped.
    pub fn begin(self: &Arc<Self>, index: usize) -> InFlight {
        if let Some(replica) = self.replicas.get(index) {
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            upstream: self.clone(),
            index,
        }
    }

    /// Requests this proxy has at replica `index` now.
    pub fn in_flight(&self, index: usize) -> u32 {
        self.replicas
            .get(index)
            .map_or(0, |r| r.in_flight.load(Ordering::Relaxed))
    }

    /// Remembers `error` as the last one met at replica `index`.
    pub fn note_error(&self, index: usize, error: impl Into<String>) {
        if let Some(replica) = self.replicas.get(index) {
            replica.note_error(error.into());
        }
    }

    /// The last error met at replica `index` and when (unix seconds).
    pub fn last_error(&self, index: usize) -> Option<(String, i64)> {
        let replica = self.replicas.get(index)?;
        replica.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A connect error: skip this replica for [`EJECTION`].
    pub fn eject(&self, index: usize) {
        if let Some(replica) = self.replicas.get(index) {
            let until = self.now_ms() + EJECTION.as_millis() as u64;
            replica.ejected_until.store(until, Ordering::Relaxed);
        }
    }

    /// Neither ejected after a connect error nor down by health checks.
    fn is_available(&self, index: usize, now_ms: u64) -> bool {
        let replica = &self.replicas[index];
        replica.ejected_until.load(Ordering::Relaxed) <= now_ms && !replica.health.is_down()
    }

    pub fn is_ejected(&self, index: usize) -> bool {
        self.replicas
            .get(index)
            .is_some_and(|r| r.ejected_until.load(Ordering::Relaxed) > self.now_ms())
    }

    /// What this proxy knows of replica `index` now, for `/metrics`.
    pub fn replica_state(&self, index: usize) -> ReplicaState {
        let now = self.now_ms();
        let replica = &self.replicas[index];
        ReplicaState {
            up: self.is_available(index, now),
            in_flight: self.in_flight(index),
            reading: replica.load.fresh(now),
            reading_age_ms: replica.load.age_ms(now),
        }
    }

    /// Whether replica `index` takes requests and is not saturated now.
    pub fn replica_has_room(&self, index: usize) -> bool {
        self.has_room(index, self.now_ms())
    }

    /// Requests waiting in the backend's queue, by product and priority.
    pub fn queue_depths(&self) -> Vec<(std::sync::Arc<str>, maas_store::model::Priority, u32)> {
        self.queue.depths()
    }

    /// Replicas neither ejected nor down now.
    pub fn healthy_replicas(&self) -> usize {
        let now = self.now_ms();
        (0..self.replicas.len()).filter(|&i| self.is_available(i, now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(urls: &[&str]) -> Backend {
        Backend {
            system_name: "b".into(),
            name: String::new(),
            description: String::new(),
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            health_path: "/health".into(),
            timeouts: maas_store::model::Timeouts::default(),
            api_key_env: None,
            balance: Balance::RoundRobin,
            prefix_affinity: false,
            health_check: None,
            saturation: None,
            priority_scheduling: false,
        }
    }

    #[test]
    fn parses_backend_urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8000").unwrap(),
            BackendUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8000,
                path: "/".into()
            }
        );
        let url = parse_url("https://[::1]/openai/v1").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.path.as_str()),
            (true, "::1", 443, "/openai/v1")
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://host:notaport").is_err());
    }

    #[tokio::test]
    async fn round_robin_skips_ejected_replicas() {
        let upstream = Upstream::resolve(
            &backend(&["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]),
            None,
        )
        .await
        .unwrap();
        let picks: Vec<usize> = (0..6).map(|_| upstream.pick()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        upstream.eject(1);
        let picks: Vec<usize> = (0..4).map(|_| upstream.pick()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(upstream.healthy_replicas(), 2);
        std::thread::sleep(Duration::from_millis(3));
        upstream.eject(0);
        upstream.eject(2);
        // All ejected: still answers, with the replica that was ejected first.
        assert_eq!(upstream.pick(), 1);
        assert_eq!(upstream.replicas[0].authority, "127.0.0.1:1");
    }

    #[tokio::test]
    async fn least_requests_picks_the_replica_with_fewest_in_flight() {
        let backend = Backend {
            balance: Balance::LeastRequests,
            ..backend(&["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"])
        };
        let upstream = Arc::new(Upstream::resolve(&backend, None).await.unwrap());
        // A long request holds replica 0; the others share the rest in turn.
        let long = upstream.begin(upstream.pick());
        assert_eq!(long.index, 0);
        let picks: Vec<usize> = (0..4).map(|_| upstream.pick()).collect();
        assert!(!picks.contains(&0), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&2), "ties go in turn: {picks:?}");
        // Two held at replica 1: replica 2 (one fewer) is next, whatever the turn.
        let held: Vec<InFlight> = (0..2).map(|_| upstream.begin(1)).collect();
        assert_eq!((0..3).map(|_| upstream.pick()).collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!(upstream.in_flight(1), 2);
        drop(held);
        drop(long);
        assert_eq!((0..3).map(|i| upstream.in_flight(i)).collect::<Vec<_>>(), [0, 0, 0]);
        // An ejected replica is skipped even when it is the least loaded.
        let _busy = [upstream.begin(1), upstream.begin(2)];
        upstream.eject(0);
        assert_ne!(upstream.pick(), 0);
    }

    #[tokio::test]
    async fn load_aware_picks_the_least_loaded_by_fresh_metrics_else_by_requests() {
        let backend = Backend {
            balance: Balance::LoadAware,
            ..backend(&["http://127.0.0.1:1", "http://127.0.0.1:2"])
        };
        let upstream = Arc::new(Upstream::resolve(&backend, None).await.unwrap());
        let queued = load::Reading {
            waiting: 3,
            ..load::Reading::default()
        };
        let now = upstream.now_ms();
        upstream.replicas[0].load.store(queued, now);
        // Replica 1 never reported: requests in flight decide, in turn.
        let _held = upstream.begin(1);
        assert_eq!((0..3).map(|_| upstream.pick()).collect::<Vec<_>>(), [0, 0, 0]);
        // Both report: the queue of replica 0 outweighs one request at 1.
        upstream.replicas[1].load.store(load::Reading::default(), now);
        assert_eq!((0..3).map(|_| upstream.pick()).collect::<Vec<_>>(), [1, 1, 1]);
        // Requests sent since the reading count too: 13 at replica 1 outweigh a queue of 3.
        let _more: Vec<InFlight> = (0..12).map(|_| upstream.begin(1)).collect();
        assert_eq!(upstream.pick(), 0);
    }

    #[tokio::test]
    async fn replicas_down_by_health_checks_are_skipped() {
        let upstream = Upstream::resolve(&backend(&["http://127.0.0.1:1", "http://127.0.0.1:2"]), None)
            .await
            .unwrap();
        let check = maas_store::model::HealthCheck {
            unhealthy_after: 1,
            ..Default::default()
        };
        assert!(upstream.replicas[0].health.record(false, &check));
        assert_eq!((0..4).map(|_| upstream.pick()).collect::<Vec<_>>(), [1, 1, 1, 1]);
        assert_eq!(upstream.healthy_replicas(), 1);
    }

    #[tokio::test]
    async fn https_backends_speak_tls_with_the_host_as_server_name() {
        let upstream = Upstream::resolve(
            &backend(&["https://localhost/openai/v1", "https://localhost:8443"]),
            None,
        )
        .await
        .unwrap();
        let [default_port, own_port] = &upstream.replicas[..] else {
            panic!("two replicas");
        };
        assert!(default_port.tls && own_port.tls);
        assert_eq!(
            (default_port.host.as_str(), default_port.address.port()),
            ("localhost", 443)
        );
        assert_eq!(default_port.authority, "localhost");
        assert_eq!(own_port.authority, "localhost:8443");
        assert_eq!(upstream.base_path, "/openai/v1");
    }
}
