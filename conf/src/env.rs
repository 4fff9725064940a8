//! Environment variables that override `maas.yaml`, and the secrets that
//! only come from the environment or from files.

use std::path::Path;
use std::str::FromStr;

use crate::error::{ConfigError, ConfigErrors};
use crate::settings::{MaasConfig, Secret, StoreKind};

/// Every variable read, with the setting it overrides (for `--help` and docs).
pub const VARIABLES: &[(&str, &str)] = &[
    ("MAAS_REDIS_URL", "store.redis_url (and selects the Redis store)"),
    ("MAAS_REDIS_PREFIX", "store.redis_prefix"),
    ("MAAS_REDIS_TLS_CA_FILE", "store.redis_tls_ca_file"),
    ("MAAS_REDIS_TLS_CERT_FILE", "store.redis_tls_cert_file"),
    ("MAAS_REDIS_TLS_KEY_FILE", "store.redis_tls_key_file"),
    ("MAAS_DATA_DIR", "store.data_dir"),
    ("MAAS_STORE", "store.backend (embedded | redis)"),
    ("MAAS_STORE_OUTAGE", "store.outage (serve_cached | fail_closed)"),
    ("MAAS_STORE_TIMEOUT_MS", "store.timeout_ms"),
    ("MAAS_SPOOL_DIR", "store.spool_dir"),
    ("MAAS_PROXY_LISTEN", "proxy.listen"),
    ("MAAS_METRICS_LISTEN", "proxy.metrics_listen"),
    ("MAAS_PROXY_PUBLIC_URL", "proxy.public_url"),
    ("MAAS_ENVIRONMENT", "proxy.environment (staging | production)"),
    ("MAAS_PORTAL_LISTEN", "portal.listen"),
    ("MAAS_PORTAL_PUBLIC_URL", "portal.public_url"),
    (
        "MAAS_PORTAL_TRUSTED_PROXIES",
        "portal.trusted_proxies (comma-separated addresses or CIDRs)",
    ),
    ("MAAS_SIM_LISTEN", "sim.listen"),
    ("MAAS_SSO_ISSUER_URL", "sso.issuer_url"),
    ("MAAS_SSO_CLIENT_ID", "sso.client_id"),
    ("MAAS_LIMITS_MODE", "limits.mode (strict | local)"),
    ("MAAS_LIMITS_SYNC_INTERVAL_MS", "limits.sync_interval_ms"),
    ("MAAS_TOKEN_HOLD_TTL_SECS", "limits.hold_ttl_secs"),
    ("MAAS_DEFAULT_MAX_TOKENS", "limits.default_max_tokens"),
    ("MAAS_MAX_BODY_BYTES", "proxy.max_body_bytes"),
    ("MAAS_PROXY_THREADS", "proxy.threads"),
    ("MAAS_SHUTDOWN_TIMEOUT_SECS", "proxy.shutdown_timeout_secs"),
    ("MAAS_UPSTREAM_CA_FILE", "proxy.upstream_ca_file"),
    ("MAAS_OVERHEAD_HEADER", "proxy.overhead_header (true | false)"),
    ("MAAS_REPORT_INTERVAL_MS", "proxy.report_interval_ms"),
    ("MAAS_ACCESS_LOG", "logging.access_log (true | false)"),
    ("MAAS_LOG_LEVEL", "logging.level"),
    ("MAAS_LOG_FORMAT", "logging.format (text | json)"),
    ("MAAS_KEY_PREFIX", "keys.prefix"),
    (
        "MAAS_ADMIN_TOKEN",
        "secret: bootstrap admin token (or admin.token_file)",
    ),
    (
        "MAAS_SSO_CLIENT_SECRET",
        "secret: OIDC client secret (or sso.client_secret_file)",
    ),
    ("MAAS_ACCESS_TOKENS_ENABLED", "access_tokens.enabled (true | false)"),
    ("MAAS_ACCESS_TOKENS_ISSUER_URL", "access_tokens.issuer_url"),
    ("MAAS_ACCESS_TOKENS_AUDIENCE", "access_tokens.audience"),
    ("MAAS_ACCESS_TOKENS_JWKS_URL", "access_tokens.jwks_url"),
    ("MAAS_ACCESS_TOKENS_LEEWAY_SECS", "access_tokens.leeway_secs"),
    (
        "MAAS_ACCESS_TOKENS_JWKS_MIN_REFRESH_SECS",
        "access_tokens.jwks_min_refresh_secs",
    ),
    ("MAAS_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("MAAS_OTLP_METRICS_INTERVAL_MS", "telemetry.metrics_interval_ms"),
    ("MAAS_TRACE_SAMPLE_RATIO", "telemetry.trace_sample_ratio"),
    ("MAAS_ALERTS_WEBHOOK_URL", "alerts.webhook_url"),
    ("MAAS_ALERTS_INTERVAL_MS", "alerts.interval_ms"),
    (
        "MAAS_ALERTS_WEBHOOK_SECRET",
        "secret: signs budget alerts' webhook calls (or alerts.webhook_secret_file)",
    ),
];

struct Overrides<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Overrides<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    fn error(&mut self, name: &str, message: String) {
        self.errors.push(ConfigError {
            source: "environment".into(),
            line: None,
            field: name.into(),
            message,
        });
    }

    fn parse<T: FromStr>(&mut self, name: &str, target: &mut T)
    where
        T::Err: std::fmt::Display,
    {
        if let Some(value) = self.get(name) {
            match value.parse() {
                Ok(parsed) => *target = parsed,
                Err(e) => self.error(name, format!("`{value}`: {e}")),
            }
        }
    }

    fn choice<T: serde::de::DeserializeOwned>(&mut self, name: &str, target: &mut T) {
        if let Some(value) = self.get(name) {
            match serde_json::from_value(serde_json::Value::String(value.clone())) {
                Ok(parsed) => *target = parsed,
                Err(e) => self.error(name, format!("`{value}`: {e}")),
            }
        }
    }

    fn string(&mut self, name: &str, target: &mut String) {
        if let Some(value) = self.get(name) {
            *target = value;
        }
    }

    fn path(&mut self, name: &str, target: &mut Option<std::path::PathBuf>) {
        if let Some(value) = self.get(name) {
            *target = Some(value.into());
        }
    }

    fn optional(&mut self, name: &str, target: &mut Option<String>) {
        if let Some(value) = self.get(name) {
            *target = Some(value);
        }
    }

    /// The variable, else the file's content (trimmed).
    fn secret(&mut self, name: &str, file: Option<&Path>, field: &str) -> Option<Secret> {
        if let Some(value) = self.get(name) {
            return Some(Secret::new(value));
        }
        let file = file?;
        match std::fs::read_to_string(file) {
            Ok(text) if !text.trim().is_empty() => Some(Secret::new(text.trim())),
            Ok(_) => {
                self.error(field, format!("{} is empty", file.display()));
                None
            }
            Err(e) => {
                self.error(field, format!("cannot read {}: {e}", file.display()));
                None
            }
        }
    }
}

/// Applies the `MAAS_*` variables `lookup` returns to `config` and loads its
/// secrets. Tests pass a map; the binary passes `std::env::var`.
pub fn apply_environment(config: &mut MaasConfig, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigErrors> {
    let mut env = Overrides {
        lookup,
        errors: Vec::new(),
    };
    if let Some(url) = env.get("MAAS_REDIS_URL") {
        config.store.redis_url = Some(url);
    }
    env.string("MAAS_REDIS_PREFIX", &mut config.store.redis_prefix);
    env.path("MAAS_REDIS_TLS_CA_FILE", &mut config.store.redis_tls_ca_file);
    env.path("MAAS_REDIS_TLS_CERT_FILE", &mut config.store.redis_tls_cert_file);
    env.path("MAAS_REDIS_TLS_KEY_FILE", &mut config.store.redis_tls_key_file);
    env.parse("MAAS_DATA_DIR", &mut config.store.data_dir);
    let mut backend = config.store.backend.unwrap_or(config.store.kind());
    if env.get("MAAS_STORE").is_some() {
        env.choice::<StoreKind>("MAAS_STORE", &mut backend);
        config.store.backend = Some(backend);
    }
    env.choice("MAAS_STORE_OUTAGE", &mut config.store.outage);
    env.parse("MAAS_STORE_TIMEOUT_MS", &mut config.store.timeout_ms);
    env.path("MAAS_SPOOL_DIR", &mut config.store.spool_dir);
    env.parse("MAAS_PROXY_LISTEN", &mut config.proxy.listen);
    env.parse("MAAS_METRICS_LISTEN", &mut config.proxy.metrics_listen);
    env.optional("MAAS_PROXY_PUBLIC_URL", &mut config.proxy.public_url);
    env.parse("MAAS_ENVIRONMENT", &mut config.proxy.environment);
    env.parse("MAAS_PORTAL_LISTEN", &mut config.portal.listen);
    env.optional("MAAS_PORTAL_PUBLIC_URL", &mut config.portal.public_url);
    if let Some(list) = env.get("MAAS_PORTAL_TRUSTED_PROXIES") {
        config.portal.trusted_proxies = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    env.parse("MAAS_SIM_LISTEN", &mut config.sim.listen);
    env.optional("MAAS_SSO_ISSUER_URL", &mut config.sso.issuer_url);
    env.optional("MAAS_SSO_CLIENT_ID", &mut config.sso.client_id);
    env.choice("MAAS_LIMITS_MODE", &mut config.limits.mode);
    env.parse("MAAS_LIMITS_SYNC_INTERVAL_MS", &mut config.limits.sync_interval_ms);
    env.parse("MAAS_TOKEN_HOLD_TTL_SECS", &mut config.limits.hold_ttl_secs);
    env.parse("MAAS_DEFAULT_MAX_TOKENS", &mut config.limits.default_max_tokens);
    env.parse("MAAS_MAX_BODY_BYTES", &mut config.proxy.max_body_bytes);
    env.parse("MAAS_PROXY_THREADS", &mut config.proxy.threads);
    env.parse("MAAS_SHUTDOWN_TIMEOUT_SECS", &mut config.proxy.shutdown_timeout_secs);
    env.path("MAAS_UPSTREAM_CA_FILE", &mut config.proxy.upstream_ca_file);
    env.parse("MAAS_OVERHEAD_HEADER", &mut config.proxy.overhead_header);
    env.parse("MAAS_REPORT_INTERVAL_MS", &mut config.proxy.report_interval_ms);
    env.parse("MAAS_ACCESS_LOG", &mut config.logging.access_log);
    env.string("MAAS_LOG_LEVEL", &mut config.logging.level);
    env.choice("MAAS_LOG_FORMAT", &mut config.logging.format);
    env.string("MAAS_KEY_PREFIX", &mut config.keys.prefix);

    env.parse("MAAS_ACCESS_TOKENS_ENABLED", &mut config.access_tokens.enabled);
    env.optional("MAAS_ACCESS_TOKENS_ISSUER_URL", &mut config.access_tokens.issuer_url);
    env.optional("MAAS_ACCESS_TOKENS_AUDIENCE", &mut config.access_tokens.audience);
    env.optional("MAAS_ACCESS_TOKENS_JWKS_URL", &mut config.access_tokens.jwks_url);
    env.parse("MAAS_ACCESS_TOKENS_LEEWAY_SECS", &mut config.access_tokens.leeway_secs);
    env.parse(
        "MAAS_ACCESS_TOKENS_JWKS_MIN_REFRESH_SECS",
        &mut config.access_tokens.jwks_min_refresh_secs,
    );
    env.optional("MAAS_OTLP_ENDPOINT", &mut config.telemetry.otlp_endpoint);
    env.parse(
        "MAAS_OTLP_METRICS_INTERVAL_MS",
        &mut config.telemetry.metrics_interval_ms,
    );
    env.parse("MAAS_TRACE_SAMPLE_RATIO", &mut config.telemetry.trace_sample_ratio);
    env.optional("MAAS_ALERTS_WEBHOOK_URL", &mut config.alerts.webhook_url);
    env.parse("MAAS_ALERTS_INTERVAL_MS", &mut config.alerts.interval_ms);
    let alerts_file = config.alerts.webhook_secret_file.clone();
    config.secrets.alerts_webhook_secret = env.secret(
        "MAAS_ALERTS_WEBHOOK_SECRET",
        alerts_file.as_deref(),
        "alerts.webhook_secret_file",
    );
    let admin_file = config.admin.token_file.clone();
    let sso_file = config.sso.client_secret_file.clone();
    config.secrets.admin_token = env.secret("MAAS_ADMIN_TOKEN", admin_file.as_deref(), "admin.token_file");
    config.secrets.sso_client_secret =
        env.secret("MAAS_SSO_CLIENT_SECRET", sso_file.as_deref(), "sso.client_secret_file");
    if env.errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(env.errors))
    }
}
