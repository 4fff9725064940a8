//! [`Store`]: the domain API over a [`StoreBackend`], written once for
//! both backends.

mod admin_tokens;
mod applications;
mod attempts;
mod audit;
mod budget_alerts;
mod budgets;
mod catalog;
mod drafts;
mod identity;
mod key_use;
mod keys;
mod paging;
mod password_resets;
mod proxies;
mod sessions;
mod teams;
mod tenancy;
mod token_clients;
mod usage;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use admin_tokens::ADMIN_TOKEN_PREFIX;
pub use applications::{
    ApplicationAction, ApplicationFilter, ApplicationUpdate, MAX_DESCRIPTION, NewApplication, PlanChangeBy, plan_change,
};
pub use attempts::{Attempt, AttemptEnd, AttemptLimit, AttemptStart};
pub use audit::{Actor, AuditEntry, AuditQuery};
pub use budget_alerts::{AlertDelivery, BudgetAlert, DELIVERY_LEASE, DeliveryState, retry_backoff};
pub use budgets::BudgetStatus;
pub(crate) use catalog::plan_key;
pub use catalog::{CatalogDiff, CatalogSnapshot, Environment, ProductRelease};
pub use drafts::ProductDraft;
pub use identity::LocalSignUp;
pub use key_use::{KEY_USE_RESOLUTION_SECS, key_use_slot};
pub use keys::{IssuedKey, NewKey};
pub use paging::{Page, Paged, all_pages};
pub use password_resets::{MAX_PASSWORD_RESET_TTL, PASSWORD_RESET_PREFIX};
pub use proxies::{
    BackendReport, PROXY_FORGOTTEN_AFTER_SECS, PROXY_SILENT_AFTER_SECS, ProxyReport, ReplicaLoadReport, ReplicaReport,
};
pub use sessions::{MAX_LISTED_SESSIONS, SessionEntry, SessionRecord, session_handle};
pub use teams::{
    INVITATION_PREFIX, IssuedInvitation, Joined, MAX_INVITATION_TTL, MAX_OPEN_INVITATIONS, NewMember, is_last_owner,
    is_owner, manages_team,
};
pub use tenancy::{NewAccount, NewUser, UserUpdate};
pub use usage::{
    Admission, BREAKDOWN_METRICS, Breakdown, LimitCheck, LimitStatus, MAX_SERIES_POINTS, TokenHold, UsagePoint,
    UsageRecord, enforced_periods, hold_on, split_by_limits,
};
pub use versions::{Precondition, check as check_precondition, etag};

use crate::backend::embedded::EmbeddedBackend;
use crate::backend::redis::{RedisBackend, RedisConnect};
use crate::backend::{ConditionFailed, StoreBackend, WriteBatch};
use crate::changes::ChangeSubscription;
use crate::clock::{Clock, SystemClock};
use crate::error::{StoreError, StoreResult};
use crate::model::DEFAULT_KEY_PREFIX;

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A redb file `maas.redb` in this directory.
    Embedded { data_dir: PathBuf },
    /// A Redis server; every key starts with `prefix:`.
    Redis { url: String, prefix: String, tls: RedisTls },
}

/// PEM files for a `rediss://` connection. Without `ca_file` the server's
/// certificate is checked against the system's trust store; `cert_file` and
/// `key_file` together present a client certificate (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl RedisTls {
    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Settings that are not about where the data lives.
#[derive(Clone)]
pub struct StoreOptions {
    /// Prefix of generated API keys.
    pub key_prefix: String,
    pub clock: Arc<dyn Clock>,
    /// How long a Redis command may wait for its answer before it fails.
    /// The proxy sets it long: it puts its own deadline on the calls a
    /// request waits for, and a usage write that failed on this timeout
    /// may still run when a hung Redis wakes (it would be retried, and
    /// counted twice).
    pub redis_response_timeout: std::time::Duration,
    /// A Redis server that refuses or does not answer yet is connected to
    /// when it does, instead of failing `open` (the proxy starts before
    /// Redis and becomes ready with it).
    pub wait_for_redis: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            clock: Arc::new(SystemClock),
            redis_response_timeout: std::time::Duration::from_secs(5),
            wait_for_redis: false,
        }
    }
}

/// The one data model of MaaS: catalog, tenants, keys, usage, sessions,
/// audit log and change feed. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn StoreBackend>,
    clock: Arc<dyn Clock>,
    key_prefix: Arc<str>,
    actor: Actor,
}

impl Store {
    pub async fn open(location: &StoreLocation, options: StoreOptions) -> StoreResult<Store> {
        let backend: Arc<dyn StoreBackend> = match location {
            StoreLocation::Embedded { data_dir } => Arc::new(EmbeddedBackend::open(data_dir, options.clock.clone())?),
            StoreLocation::Redis { url, prefix, tls } => Arc::new(
                RedisBackend::connect_with(
                    url,
                    prefix,
                    tls,
                    RedisConnect {
                        response_timeout: options.redis_response_timeout,
                        wait_for_server: options.wait_for_redis,
                    },
                )
                .await?,
            ),
        };
        Ok(Store::with_backend(backend, options))
    }

    pub fn with_backend(backend: Arc<dyn StoreBackend>, options: StoreOptions) -> Store {
        if !crate::model::valid_key_prefix(&options.key_prefix) {
            tracing::warn!(prefix = %options.key_prefix, "unusual API key prefix");
        }
        Store {
            backend,
            clock: options.clock,
            key_prefix: options.key_prefix.into(),
            actor: Actor::system(),
        }
    }

    /// This store, recording `actor` as the author of its changes.
    pub fn as_actor(&self, actor: Actor) -> Store {
        Store { actor, ..self.clone() }
    }

    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn subscribe(&self) -> ChangeSubscription {
        ChangeSubscription {
            receiver: self.backend.subscribe(),
        }
    }

    /// Whether the store answers now.
    pub async fn ping(&self) -> StoreResult<()> {
        self.backend.ping().await
    }

    /// Makes every write so far durable; call before exiting.
    pub async fn flush(&self) -> StoreResult<()> {
        self.backend.flush().await
    }

    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        self.backend
            .get(key)
            .await?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    async fn get_many_json<T: DeserializeOwned>(&self, keys: &[String]) -> StoreResult<Vec<Option<T>>> {
        let values = self.backend.get_many(keys).await?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| value.map(|bytes| decode(key, &bytes)).transpose())
            .collect()
    }

    /// Every member of a collection, paging through it.
    async fn all_members(&self, collection: &str) -> StoreResult<Vec<String>> {
        const PAGE: usize = 1000;
        let mut all: Vec<String> = Vec::new();
        loop {
            let page = self
                .backend
                .members(collection, all.last().map(String::as_str), PAGE, false)
                .await?;
            let done = page.len() < PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Commits `batch` with the audit entries of its changes.
    async fn commit(&self, mut batch: WriteBatch, audit: Vec<AuditEntry>) -> StoreResult<Result<(), ConditionFailed>> {
        for entry in audit {
            let key = format!("audit:{}", entry.id);
            batch.add_member("audit", entry.id.clone());
            batch.put(key, encode(&entry)?);
        }
        self.backend.commit(batch).await
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("record `{key}`: {e}")))
}

pub(crate) fn now_ms(now: time::OffsetDateTime) -> u64 {
    u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
