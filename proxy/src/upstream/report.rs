//! What this proxy publishes about its backends' replicas through the
//! store ([`Store::report_proxy`]), so the admin console shows live state
//! for every proxy without reaching any of them: each replica up or down,
//! this proxy's requests in flight, the model server's own load and the
//! last error met there.

use std::sync::Arc;
use std::time::Duration;

use maas_store::{BackendReport, ProxyReport, ReplicaLoadReport, ReplicaReport};

use super::Upstream;
use crate::state::ProxyState;

impl Upstream {
    /// This backend's replicas as this proxy sees them now.
    pub fn report(&self) -> BackendReport {
        let replicas = (0..self.replicas.len())
            .map(|index| {
                let state = self.replica_state(index);
                let (last_error, last_error_at) = self.last_error(index).unzip();
                ReplicaReport {
                    url: self.backend.urls.get(index).cloned().unwrap_or_default(),
                    up: state.up,
                    in_flight: state.in_flight,
                    load: state.reading.map(|reading| ReplicaLoadReport {
                        waiting: reading.waiting,
                        running: reading.running,
                        kv_cache_percent: (reading.kv_usage * 1000.0).round() / 10.0,
                        age_ms: state.reading_age_ms.unwrap_or(0),
                    }),
                    last_error,
                    last_error_at,
                }
            })
            .collect();
        BackendReport {
            backend: self.backend.system_name.clone(),
            queued: self.queue_depths().iter().map(|(_, _, waiting)| waiting).sum(),
            replicas,
        }
    }
}

/// This proxy's name in reports: its host and listen address, so a
/// restarted proxy reports under the same name.
pub fn proxy_name(listen: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "proxy".to_owned());
    format!("{host} {listen}")
}

/// Reports `state`'s backends as `name` `every` so often, for as long as
/// the proxy runs. A report that fails is skipped: the next one says the
/// same, newer.
pub async fn report_forever(state: Arc<ProxyState>, name: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let catalog = state.catalog();
        let mut backends: Vec<BackendReport> = catalog.upstreams.values().map(|u| u.report()).collect();
        backends.sort_by(|a, b| a.backend.cmp(&b.backend));
        let report = ProxyReport {
            proxy: name.clone(),
            reported_at: 0,
            catalog_revision: catalog.routes.revision,
            backends,
        };
        if let Err(error) = state.store.report_proxy(report).await {
            tracing::debug!(%error, "reporting replica state to the store failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use maas_store::model::{Backend, Balance};

    use super::*;

    #[tokio::test]
    async fn a_report_tells_each_replica_by_its_url() {
        let backend: Backend = serde_json::from_value(serde_json::json!({
            "system_name": "vllm", "urls": ["http://127.0.0.1:1", "http://127.0.0.1:2/v1"]
        }))
        .unwrap();
        assert_eq!(backend.balance, Balance::RoundRobin);
        let upstream = Arc::new(Upstream::resolve(&backend, None).await.unwrap());
        upstream.eject(1);
        upstream.note_error(1, format!("connect: {}", "é".repeat(400)));
        let _at_first = upstream.begin(0);
        let report = upstream.report();
        assert_eq!(report.backend, "vllm");
        let [first, second] = &report.replicas[..] else {
            panic!("{report:?}")
        };
        assert_eq!(
            (first.url.as_str(), first.up, first.in_flight),
            ("http://127.0.0.1:1", true, 1)
        );
        assert_eq!(first.last_error, None);
        assert_eq!((second.url.as_str(), second.up), ("http://127.0.0.1:2/v1", false));
        let error = second.last_error.as_deref().unwrap();
        assert!(error.starts_with("connect: é") && error.len() <= 300, "{}", error.len());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(second.last_error_at.is_some_and(|at| (now - at).abs() <= 1));
        assert_eq!(first.load, None, "no reading: none reported");
    }
}
