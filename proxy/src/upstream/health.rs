//! Active health checks of a backend with `health_check:`: a task that
//! lives as long as the catalog revision's [`Upstream`] sends
//! `GET {health_path}` to every replica each interval and marks a replica
//! down after `unhealthy_after` failures in a row, up after
//! `healthy_after` successes. The counting is a pure state machine.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use maas_store::model::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Replica, Upstream};

/// A replica's health as probed; up until probes say otherwise.
#[derive(Debug, Default)]
pub struct ReplicaHealth {
    down: AtomicBool,
    /// Probes in a row that disagreed with `down`.
    streak: AtomicU32,
}

impl ReplicaHealth {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Counts one probe; whether the replica's state changed.
    pub fn record(&self, ok: bool, check: &HealthCheck) -> bool {
        let down = self.is_down();
        if ok != down {
            // Agrees with the state: the streak toward a change starts over.
            self.streak.store(0, Ordering::Relaxed);
            return false;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if down {
            check.healthy_after
        } else {
            check.unhealthy_after
        };
        if streak >= needed.max(1) {
            self.down.store(!down, Ordering::Relaxed);
            self.streak.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Probes every replica of `upstream` by `check` while it is in use.
pub fn spawn_prober(upstream: &Arc<Upstream>, check: HealthCheck, path: String) {
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(check.interval_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(upstream) = weak.upgrade() else { return };
            for replica in &upstream.replicas {
                let ok = probe(replica, &path, Duration::from_millis(check.timeout_ms.max(1))).await;
                if !ok {
                    replica.note_error(format!("health check: GET {path} failed or did not answer 2xx"));
                }
                if replica.health.record(ok, &check) {
                    let state = if replica.health.is_down() { "down" } else { "up" };
                    tracing::warn!(backend = %upstream.backend.system_name, replica = %replica.authority, state, "health check");
                }
            }
            // A replica back up has room for requests waiting in the queue.
            upstream.release();
        }
    });
}

/// Whether `GET path` on `replica` answers 2xx within `timeout`. TLS
/// replicas are probed for a TCP connection only.
async fn probe(replica: &Replica, path: &str, timeout: Duration) -> bool {
    let answer = async {
        let mut stream = tokio::net::TcpStream::connect(replica.address).await.ok()?;
        if replica.tls {
            return Some(true);
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            replica.authority
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    };
    tokio::time::timeout(timeout, answer)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_failures_in_a_row_and_up_after_successes() {
        let check = HealthCheck {
            unhealthy_after: 2,
            healthy_after: 3,
            ..HealthCheck::default()
        };
        let health = ReplicaHealth::default();
        assert!(!health.record(false, &check));
        assert!(!health.record(true, &check), "a success breaks the streak");
        assert!(!health.record(false, &check));
        assert!(health.record(false, &check), "two in a row: down");
        assert!(health.is_down());
        assert!(!health.record(true, &check));
        assert!(!health.record(true, &check));
        assert!(
            !health.record(false, &check),
            "a failure while down breaks the streak up"
        );
        for _ in 0..2 {
            assert!(!health.record(true, &check));
        }
        assert!(health.record(true, &check), "three in a row: up");
        assert!(!health.is_down());
    }
}
