//! What each running proxy last said about its backends' replicas (up or
//! down, requests in flight and waiting, the model server's own load, the
//! last error), so the admin console shows live state for a fleet of
//! proxies without reaching any of them.
//!
//! Each proxy writes one record every few seconds under its own name; a
//! proxy that stops writing is shown as silent, then forgotten.

use serde::{Deserialize, Serialize};

use super::{Store, decode, encode};
use crate::backend::{Condition, WriteBatch};
use crate::error::{StoreError, StoreResult};

const COLLECTION: &str = "proxies";
/// A report older than this is shown as from a silent proxy.
pub const PROXY_SILENT_AFTER_SECS: i64 = 30;
/// A report older than this is deleted when reports are read: the proxy
/// is gone (a restarted one reports under the same name again).
pub const PROXY_FORGOTTEN_AFTER_SECS: i64 = 3_600;
const MAX_PROXY_NAME: usize = 200;

/// One proxy's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyReport {
    /// The proxy's name: unique per running proxy, the same after a
    /// restart (its host and listen address).
    pub proxy: String,
    /// Unix seconds, by the store's clock (set by [`Store::report_proxy`]).
    #[serde(default)]
    pub reported_at: i64,
    /// The catalog revision it serves.
    pub catalog_revision: u64,
    pub backends: Vec<BackendReport>,
}

/// One backend as a proxy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// The backend's system name.
    pub backend: String,
    /// Requests waiting in this proxy's gateway queue for the backend.
    #[serde(default)]
    pub queued: u32,
    pub replicas: Vec<ReplicaReport>,
}

/// One replica as a proxy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// Its URL as the catalog writes it.
    pub url: String,
    /// Takes requests: not ejected after errors, not failing health checks.
    pub up: bool,
    /// This proxy's requests there now.
    pub in_flight: u32,
    /// What the model server last said of its own load (`load_aware` or
    /// `saturation:` backends, while fresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<ReplicaLoadReport>,
    /// The last error a request or health check met there, and when (unix
    /// seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLoadReport {
    pub waiting: u32,
    pub running: u32,
    /// 0 to 100.
    pub kv_cache_percent: f64,
    pub age_ms: u64,
}

fn report_key(proxy: &str) -> String {
    format!("proxy:{proxy}")
}

impl ProxyReport {
    /// Whether its proxy has not reported for [`PROXY_SILENT_AFTER_SECS`]
    /// at `now` (unix seconds).
    pub fn is_silent(&self, now: i64) -> bool {
        now - self.reported_at > PROXY_SILENT_AFTER_SECS
    }
}

impl Store {
    /// Stores `report` as its proxy's latest, stamped now.
    pub async fn report_proxy(&self, mut report: ProxyReport) -> StoreResult<()> {
        if report.proxy.is_empty() || report.proxy.len() > MAX_PROXY_NAME {
            return Err(StoreError::invalid("proxy", "a proxy's name has 1 to 200 bytes"));
        }
        report.reported_at = self.now().unix_timestamp();
        let mut batch = WriteBatch::default();
        batch
            .put(report_key(&report.proxy), encode(&report)?)
            .add_member(COLLECTION, report.proxy.clone());
        self.backend
            .commit(batch)
            .await?
            .map_err(|_| StoreError::Corrupt("an unconditional write failed its conditions".into()))
    }

    /// Every proxy's latest report, by name, silent ones included (see
    /// [`ProxyReport::is_silent`]); reports of proxies gone for
    /// [`PROXY_FORGOTTEN_AFTER_SECS`] are deleted.
    pub async fn proxy_reports(&self) -> StoreResult<Vec<ProxyReport>> {
        let names = self.all_members(COLLECTION).await?;
        let keys: Vec<String> = names.iter().map(|n| report_key(n)).collect();
        let values = self.backend.get_many(&keys).await?;
        let now = self.now().unix_timestamp();
        let mut reports = Vec::new();
        for ((name, key), value) in names.iter().zip(&keys).zip(values) {
            let report = value
                .as_deref()
                .map(|bytes| decode::<ProxyReport>(key, bytes))
                .transpose()?;
            if let Some(report) = report.filter(|r| now - r.reported_at <= PROXY_FORGOTTEN_AFTER_SECS) {
                reports.push(report);
                continue;
            }
            // Only the version read is forgotten: a proxy that reported
            // again meanwhile keeps its report.
            let mut forget = WriteBatch::default();
            forget.require(match value {
                Some(bytes) => Condition::Equals(key.clone(), bytes),
                None => Condition::Absent(key.clone()),
            });
            forget.delete(key.clone()).remove_member(COLLECTION, name.clone());
            let _ = self.backend.commit(forget).await?;
        }
        reports.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        Ok(reports)
    }
}
