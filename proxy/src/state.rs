//! What every request reads: the served catalog (routes and upstreams)
//! and the key cache, both kept current by the store's change feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use maas_store::model::{AuthContext, CorsPolicy, CredentialLocation, CredentialSettings, KeyHash};
use maas_store::{Change, Environment, Store, StoreResult};
use moka::sync::Cache;

use crate::limits::Limiter;
use crate::limits::breaker::is_unavailable;
use crate::limits::outage::OutagePolicy;
use crate::record::metrics::METRICS;
use crate::request::routing::RouteTable;
use crate::upstream::Upstream;

/// How long a known key is trusted without hearing from the store; change
/// events invalidate it sooner.
pub const KEY_TTL: Duration = Duration::from_secs(60);
/// How long an unknown key is remembered as unknown (a miss storm of random
/// keys costs one store lookup per key per this period).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The catalog of one revision as the proxy serves it.
#[derive(Debug, Default)]
pub struct ServingCatalog {
    pub routes: RouteTable,
    /// By backend `system_name`; backends that failed to resolve are absent.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// What the shared `/v1` endpoint accepts: the union of every product's
    /// credential locations and CORS origins.
    pub shared_credentials: CredentialSettings,
    pub shared_cors: Option<CorsPolicy>,
    /// Models' tokenizers by path ([`crate::request::tokenizer`]).
    pub tokenizers: HashMap<String, Arc<crate::request::tokenizer::ModelTokenizer>>,
}

impl ServingCatalog {
    /// The catalog of the store's current revision. A backend that did not
    /// change since `previous` (the same definition, credential and
    /// addresses) keeps its [`Upstream`]: its requests in flight, gateway
    /// queue, load readings and health go on across the reload.
    pub async fn load(
        store: &Store,
        environment: Environment,
        previous: &ServingCatalog,
    ) -> StoreResult<ServingCatalog> {
        let snapshot = store.catalog_for(environment).await?;
        let routes = RouteTable::build(&snapshot);
        let mut upstreams = HashMap::new();
        for backend in &snapshot.backends {
            let authorization = backend
                .api_key_env
                .as_deref()
                .and_then(|name| std::env::var(name).ok())
                .map(|key| format!("Bearer {}", key.trim()));
            match Upstream::resolve(backend, authorization).await {
                Ok(upstream) => {
                    if let Some(unchanged) = previous
                        .upstreams
                        .get(&backend.system_name)
                        .filter(|before| before.is_same_as(&upstream))
                    {
                        upstreams.insert(backend.system_name.clone(), unchanged.clone());
                        continue;
                    }
                    let upstream = Arc::new(upstream);
                    // Saturation reads the same metrics the load-aware pick does.
                    if upstream.backend.balance == maas_store::model::Balance::LoadAware
                        || upstream.backend.saturation.is_some()
                    {
                        crate::upstream::spawn_scraper(&upstream);
                    }
                    if let Some(check) = &backend.health_check {
                        crate::upstream::spawn_prober(&upstream, check.clone(), backend.health_path.clone());
                    }
                    upstreams.insert(backend.system_name.clone(), upstream);
                }
                Err(error) => tracing::error!(backend = %backend.system_name, %error, "backend unusable"),
            }
        }
        let mut shared_credentials = CredentialSettings {
            locations: Vec::new(),
            ..CredentialSettings::default()
        };
        let mut shared_cors: Option<CorsPolicy> = None;
        for route in routes.products() {
            for location in &route.product.credentials.locations {
                if !shared_credentials.locations.contains(location) {
                    shared_credentials.locations.push(*location);
                }
            }
            if let Some(policy) = &route.product.cors {
                let merged = shared_cors.get_or_insert_with(|| CorsPolicy {
                    allow_origins: Vec::new(),
                    allow_headers: Vec::new(),
                    allow_methods: Vec::new(),
                    expose_headers: Vec::new(),
                    allow_credentials: false,
                    max_age_secs: policy.max_age_secs,
                });
                for (into, from) in [
                    (&mut merged.allow_origins, &policy.allow_origins),
                    (&mut merged.allow_headers, &policy.allow_headers),
                    (&mut merged.allow_methods, &policy.allow_methods),
                    (&mut merged.expose_headers, &policy.expose_headers),
                ] {
                    for item in from {
                        if !into.contains(item) {
                            into.push(item.clone());
                        }
                    }
                }
                merged.allow_credentials |= policy.allow_credentials;
            }
        }
        if shared_credentials.locations.is_empty() {
            shared_credentials.locations = vec![CredentialLocation::Bearer, CredentialLocation::Basic];
        }
        let products: Vec<&str> = snapshot.products.iter().map(|p| p.system_name.as_str()).collect();
        let backends: Vec<&str> = snapshot.backends.iter().map(|b| b.system_name.as_str()).collect();
        crate::record::metrics::METRICS.prepare_for(&products, &backends);
        let tokenizers = crate::request::tokenizer::load_for(&snapshot.products).await;
        Ok(ServingCatalog {
            routes,
            upstreams,
            shared_credentials,
            shared_cors,
            tokenizers,
        })
    }
}

/// A cached key lookup: `None` is a known-unknown key.
pub type CachedKey = Option<Arc<AuthContext>>;

/// A key lookup as cached, with when the store answered it.
#[derive(Clone)]
struct KeyEntry {
    key: CachedKey,
    fetched: Instant,
}

impl KeyEntry {
    /// Fresh entries are served without asking the store; the others only
    /// while it does not answer.
    fn is_fresh(&self, fresh_after: Instant) -> bool {
        let ttl = if self.key.is_some() { KEY_TTL } else { NEGATIVE_TTL };
        self.fetched >= fresh_after && self.fetched.elapsed() < ttl
    }
}

/// Why a key could not be looked up.
#[derive(Debug)]
pub enum KeyLookupError {
    /// The store does not answer and nothing this replica knows vouches
    /// for the key (503, retry later).
    Unverifiable(maas_store::StoreError),
    Store(maas_store::StoreError),
}

pub struct ProxyState {
    pub store: Store,
    pub environment: Environment,
    catalog: RwLock<Arc<ServingCatalog>>,
    keys: Cache<KeyHash, KeyEntry>,
    pub limiter: Limiter,
    /// Keys used here, on their way to the store by the minute.
    pub key_uses: crate::record::key_use::KeyUses,
    pub max_body_bytes: u64,
    pub access_log: bool,
    /// Send `x-maas-overhead-us` on proxied responses.
    pub overhead_header: bool,
    /// Verifies access tokens (`access_tokens:` in maas.yaml); none when
    /// no issuer is configured, and products taking `oidc` refuse tokens.
    pub tokens: Option<crate::identity::TokenVerifier>,
    /// The share of new traces whose requests get a span, when tracing is
    /// on (`telemetry.trace_sample_ratio` with a collector); none: off.
    pub trace_ratio: Option<f64>,
    /// False while the last catalog reload failed (the previous catalog is
    /// still served): readiness reports it.
    catalog_current: AtomicBool,
    /// Whether any catalog was loaded (a proxy started while the store was
    /// down has none until it answers).
    catalog_loaded: AtomicBool,
    /// Why the last catalog load failed, for `/ready`.
    catalog_error: std::sync::Mutex<Option<String>>,
    /// Key entries fetched before this are stale: asked of the store again,
    /// served only while it does not answer. A resync (the change feed
    /// dropped, events may be lost) moves it instead of emptying the cache,
    /// so an outage that cuts the feed does not forget every key.
    keys_fresh_after: std::sync::Mutex<Instant>,
}

/// Known keys stay in the cache past their TTL, as long as an outage may
/// serve them ([`OutagePolicy::ServeCached`]); a lookup past the TTL asks
/// the store again.
struct KeyExpiry {
    known: Duration,
}

impl moka::Expiry<KeyHash, KeyEntry> for KeyExpiry {
    fn expire_after_create(&self, _key: &KeyHash, value: &KeyEntry, _now: Instant) -> Option<Duration> {
        Some(if value.key.is_some() { self.known } else { NEGATIVE_TTL })
    }
}

impl ProxyState {
    pub fn new(
        store: Store,
        environment: Environment,
        limiter: Limiter,
        max_body_bytes: u64,
        access_log: bool,
    ) -> ProxyState {
        ProxyState {
            store,
            environment,
            catalog: RwLock::new(Arc::new(ServingCatalog::default())),
            keys: Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(KeyExpiry {
                    known: match limiter.outage_policy() {
                        OutagePolicy::ServeCached { max_key_age } => max_key_age.max(KEY_TTL),
                        OutagePolicy::FailClosed => KEY_TTL,
                    },
                })
                .build(),
            limiter,
            key_uses: Default::default(),
            max_body_bytes,
            access_log,
            overhead_header: false,
            tokens: None,
            trace_ratio: None,
            catalog_current: AtomicBool::new(false),
            catalog_loaded: AtomicBool::new(false),
            catalog_error: std::sync::Mutex::new(None),
            keys_fresh_after: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn catalog(&self) -> Arc<ServingCatalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn reload_catalog(&self) -> StoreResult<()> {
        let previous = self.catalog();
        let fresh = ServingCatalog::load(&self.store, self.environment, &previous).await?;
        tracing::info!(
            revision = fresh.routes.revision,
            products = fresh.routes.products().len(),
            "serving catalog"
        );
        crate::record::metrics::METRICS
            .catalog_revision
            .set(i64::try_from(fresh.routes.revision).unwrap_or(i64::MAX));
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        self.catalog_current.store(true, Ordering::Relaxed);
        self.catalog_loaded.store(true, Ordering::Release);
        *self.catalog_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Whether a catalog was ever loaded.
    pub fn has_catalog(&self) -> bool {
        self.catalog_loaded.load(Ordering::Acquire)
    }

    /// A failed catalog load: served no more as current unless the store
    /// just does not answer (`serve_cached` rides that out on what it has).
    fn catalog_failed(&self, error: &maas_store::StoreError) {
        *self.catalog_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        if !(is_unavailable(error) && self.limiter.outage_policy().serves_cached()) {
            self.catalog_current.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the catalog is loaded and its last reload succeeded (or
    /// failed only because the store does not answer, under `serve_cached`).
    pub fn is_ready(&self) -> bool {
        self.catalog_current.load(Ordering::Relaxed)
    }

    /// Why the proxy is not ready, if it is not.
    pub fn not_ready_because(&self) -> Option<String> {
        if !self.has_catalog() {
            let error = self.catalog_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Some(format!(
                "not ready: waiting for the store to load the catalog ({})\n",
                error.as_deref().unwrap_or("not loaded yet")
            ));
        }
        if !self.is_ready() {
            return Some("not ready: the catalog could not be loaded from the store\n".into());
        }
        if self.limiter.breaker().is_open() && !self.limiter.outage_policy().serves_cached() {
            return Some("not ready: the store does not answer (store.outage: fail_closed)\n".into());
        }
        None
    }

    /// A proxy started while the store did not answer: keeps the error for
    /// `/ready`; [`follow_changes`](Self::follow_changes) retries the load.
    pub fn start_without_catalog(&self, error: &maas_store::StoreError) {
        self.catalog_failed(error);
    }

    /// The key's context from the cache, else from the store (cached,
    /// including "unknown"). While the store does not answer, a known key
    /// the cache still holds is served past its TTL (`serve_cached`).
    pub async fn lookup_key(&self, hash: KeyHash) -> Result<CachedKey, KeyLookupError> {
        let cached = self.keys.get(&hash);
        let fresh_after = *self.keys_fresh_after.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = cached.as_ref().filter(|entry| entry.is_fresh(fresh_after)) {
            METRICS.key_lookups.cached.inc();
            return Ok(entry.key.clone());
        }
        METRICS.key_lookups.store.inc();
        let breaker = self.limiter.breaker();
        match breaker.call(self.store.lookup_key(&hash)).await {
            Ok(found) => {
                let found = found.map(Arc::new);
                let entry = KeyEntry {
                    key: found.clone(),
                    fetched: Instant::now(),
                };
                self.keys.insert(hash, entry);
                Ok(found)
            }
            Err(error) if is_unavailable(&error) => {
                if self.limiter.outage_policy().serves_cached()
                    && let Some(KeyEntry { key: Some(known), .. }) = cached
                {
                    METRICS.outage_decisions.with_label_values(&["stale_key"]).inc();
                    return Ok(Some(known));
                }
                METRICS.outage_decisions.with_label_values(&["unverified_key"]).inc();
                Err(KeyLookupError::Unverifiable(error))
            }
            Err(error) => Err(KeyLookupError::Store(error)),
        }
    }

    fn forget_token_callers(&self) {
        if let Some(tokens) = &self.tokens {
            tokens.forget_callers();
        }
    }

    /// Applies one change event to the caches; `true` when the catalog
    /// must be reloaded.
    pub fn apply_change(&self, change: &Change) -> bool {
        let reload = self.invalidate_for(change);
        // Counted after the caches dropped what the event names, so an
        // observer that sees the count knows the cache no longer holds it.
        METRICS.changes_applied.with_label_values(&[change.kind()]).inc();
        reload
    }

    fn invalidate_for(&self, change: &Change) -> bool {
        match change {
            Change::Key { hash, .. } => {
                self.keys.invalidate(hash);
                false
            }
            // Applications, accounts and plans are inside cached contexts.
            Change::Application { .. } | Change::Account { .. } => {
                self.keys.invalidate_all();
                self.forget_token_callers();
                false
            }
            Change::User { .. } => false,
            Change::Catalog { .. } | Change::Release { .. } => {
                self.keys.invalidate_all();
                self.forget_token_callers();
                true
            }
            Change::Resync => {
                *self.keys_fresh_after.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                self.forget_token_callers();
                true
            }
        }
    }

    /// Follows the change feed until the store closes it. A failed reload
    /// is retried every second until it succeeds.
    pub async fn follow_changes(self: Arc<Self>) {
        let mut changes = self.store.subscribe();
        let mut reload_pending = !self.has_catalog();
        loop {
            let change = if reload_pending {
                tokio::select! {
                    change = changes.recv() => change,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => Some(Change::Resync),
                }
            } else {
                changes.recv().await
            };
            let Some(change) = change else { return };
            let mut reload = self.apply_change(&change);
            // Coalesce a burst (an `apply` of many objects) into one reload.
            while let Some(next) = changes.try_recv() {
                reload |= self.apply_change(&next);
            }
            if reload || reload_pending {
                reload_pending = match self.reload_catalog().await {
                    Ok(()) => false,
                    Err(error) => {
                        self.catalog_failed(&error);
                        crate::record::metrics::METRICS
                            .store_errors
                            .with_label_values(&["catalog"])
                            .inc();
                        // Retried every second: said once per streak.
                        if !reload_pending {
                            tracing::error!(%error, "reloading the catalog failed; serving the previous one");
                        }
                        true
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use maas_store::{NewKey, StoreError};

    use super::*;
    use crate::flaky_store::{DOWN, FlakyBackend, UP};
    use crate::limits::breaker::{BreakerSettings, StoreBreaker};
    use crate::limits::{HoldPolicy, LimitMode};
    use crate::record::usage::UsageSink;

    /// A proxy state on a store that can fail, and two keys of one
    /// application (as hashes).
    async fn state(policy: OutagePolicy) -> (ProxyState, Arc<FlakyBackend>, [KeyHash; 2], tempfile::TempDir) {
        let (flaky, store, _, dir) = FlakyBackend::stores();
        let app = crate::test_application(&store).await;
        let mut hashes = Vec::new();
        for _ in 0..2 {
            let key = store.create_key(&app, NewKey::default()).await.unwrap();
            hashes.push(KeyHash::of(key.secret.expose()));
        }
        let breaker = Arc::new(StoreBreaker::new(BreakerSettings {
            failures_to_open: 1,
            call_timeout: Duration::from_millis(50),
            probe_interval: Duration::from_millis(20),
        }));
        let limiter = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            LimitMode::Strict,
            HoldPolicy::default(),
        )
        .with_outage(breaker, policy);
        let state = ProxyState::new(store, Environment::Production, limiter, 1 << 20, false);
        state.reload_catalog().await.unwrap();
        (state, flaky, [hashes[0], hashes[1]], dir)
    }

    fn unverifiable(outcome: Result<CachedKey, KeyLookupError>) -> bool {
        matches!(outcome, Err(KeyLookupError::Unverifiable(StoreError::Unavailable(_))))
    }

    #[tokio::test]
    async fn known_keys_outlive_a_resync_while_the_store_is_down() {
        let (state, flaky, [known, unseen], _dir) = state(OutagePolicy::default()).await;
        assert!(state.lookup_key(known).await.unwrap().is_some());
        flaky.set(DOWN);
        // The change feed dropped: every entry is stale now.
        state.apply_change(&Change::Resync);
        assert!(
            state.lookup_key(known).await.unwrap().is_some(),
            "a known key is served from the cache while the store is down"
        );
        assert!(
            unverifiable(state.lookup_key(unseen).await),
            "an unseen key cannot be verified"
        );
        flaky.set(UP);
        state.limiter.breaker().probe(&state.store).await;
        assert!(state.lookup_key(unseen).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_revoked_key_is_dropped_even_during_an_outage() {
        let (state, flaky, [known, _], _dir) = state(OutagePolicy::default()).await;
        assert!(state.lookup_key(known).await.unwrap().is_some());
        flaky.set(DOWN);
        state.apply_change(&Change::Resync);
        state.apply_change(&Change::Key {
            id: String::new(),
            hash: known,
        });
        assert!(unverifiable(state.lookup_key(known).await));
    }

    #[tokio::test]
    async fn fail_closed_serves_no_stale_key() {
        let (state, flaky, [known, _], _dir) = state(OutagePolicy::FailClosed).await;
        assert!(state.lookup_key(known).await.unwrap().is_some());
        flaky.set(DOWN);
        state.apply_change(&Change::Resync);
        assert!(unverifiable(state.lookup_key(known).await));
        assert_eq!(
            state.not_ready_because().as_deref(),
            Some("not ready: the store does not answer (store.outage: fail_closed)\n")
        );
    }
}
