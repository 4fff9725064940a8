//! MaaS configuration files.
//!
//! - `maas.yaml` ([`MaasConfig`]): listen addresses, store, public URLs,
//!   SSO, limit mode, logging; every field defaulted, `MAAS_*` environment
//!   variables override it ([`env`]) and carry the secrets.
//! - `catalog.yaml` ([`CatalogDocument`]): backends, products, plans and
//!   optionally accounts, users and applications, for `maas apply`.
//!
//! Both reject unknown fields, and every error names file, line and field:
//! `conf/catalog.yaml:12: plans[0].limits[1].value: must be at least 1`.

pub mod access_tokens;
pub mod env;
pub mod error;
pub mod settings;
pub mod telemetry;
pub mod yaml;

use std::path::Path;

pub use access_tokens::{AccessTokenSettings, TOKEN_ALGORITHMS};
pub use error::{ConfigError, ConfigErrors};
pub use maas_store::document::CatalogDocument;
pub use settings::*;
pub use telemetry::TelemetrySettings;
use yaml::LocationIndex;

/// The demo catalog `maas up --demo` applies: two simulated models.
pub const DEMO_CATALOG: &str = include_str!("../catalog.demo.yaml");

/// Which kind of file a YAML document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Config,
    Catalog,
}

const CATALOG_KEYS: [&str; 6] = ["backends", "products", "plans", "accounts", "users", "applications"];

/// A catalog has any of the catalog's top-level keys; anything else is
/// taken for `maas.yaml`.
pub fn detect_kind(text: &str) -> FileKind {
    let is_catalog = text.lines().any(|line| {
        CATALOG_KEYS.iter().any(|key| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
    });
    if is_catalog {
        FileKind::Catalog
    } else {
        FileKind::Config
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError {
            source: path.display().to_string(),
            line: None,
            field: String::new(),
            message: e.to_string(),
        }
        .into()
    })
}

fn located(
    source: &str,
    index: Option<&LocationIndex>,
    errors: maas_store::validate::ValidationErrors,
) -> ConfigErrors {
    ConfigErrors(
        errors
            .0
            .into_iter()
            .map(|e| ConfigError {
                source: source.to_owned(),
                line: index.and_then(|i| i.line_of(&e.path)),
                field: e.path,
                message: e.message,
            })
            .collect(),
    )
}

/// Parses and validates a catalog document.
pub fn parse_catalog(source: &str, text: &str) -> Result<CatalogDocument, ConfigErrors> {
    let parsed = yaml::parse::<CatalogDocument>(source, text)?;
    parsed
        .value
        .validate()
        .map_err(|errors| located(source, Some(&parsed.index), errors))?;
    Ok(parsed.value)
}

/// What the store refused of `document` (parsed from `text`), at the
/// file's lines. The store names catalog objects by name
/// (`products[granite]`), the file by position (`products[0]`); an object
/// the file does not list keeps its name and gets no line.
pub fn locate_apply_errors(
    source: &str,
    text: &str,
    document: &CatalogDocument,
    errors: maas_store::validate::ValidationErrors,
) -> ConfigErrors {
    let index = yaml::LocationIndex::build(text).ok();
    let position = |path: &str| -> Option<String> {
        let (list, rest) = path.split_once('[')?;
        let (name, tail) = rest.split_once(']')?;
        let at = match list {
            "backends" => document.backends.iter().position(|b| b.system_name == name),
            "products" => document.products.iter().position(|p| p.system_name == name),
            "plans" => document
                .plans
                .iter()
                .position(|p| format!("{}/{}", p.product, p.system_name) == name),
            _ => None,
        }?;
        Some(format!("{list}[{at}]{tail}"))
    };
    let errors = errors
        .0
        .into_iter()
        .map(|mut e| {
            if let Some(path) = position(&e.path) {
                e.path = path;
            }
            e
        })
        .collect();
    located(source, index.as_ref(), maas_store::validate::ValidationErrors(errors))
}

pub fn load_catalog(path: &Path) -> Result<CatalogDocument, ConfigErrors> {
    parse_catalog(&path.display().to_string(), &read(path)?)
}

/// A catalog document as YAML that [`parse_catalog`] reads back equal.
pub fn catalog_to_yaml(document: &CatalogDocument) -> String {
    serde_yaml_ng::to_string(document).unwrap_or_else(|e| format!("# cannot render the catalog: {e}\n"))
}

/// Parses and validates `maas.yaml` text without the environment.
pub fn parse_config(source: &str, text: &str) -> Result<MaasConfig, ConfigErrors> {
    load_config_text(source, text, &|_| None)
}

/// The configuration in force: the file (if any), then the environment
/// `lookup` gives (the binary passes `std::env::var`), then validation of
/// the result; errors point at the file's line of the field.
pub fn load_config(path: Option<&Path>, lookup: &dyn Fn(&str) -> Option<String>) -> Result<MaasConfig, ConfigErrors> {
    match path {
        Some(path) => load_config_text(&path.display().to_string(), &read(path)?, lookup),
        None => load_config_text("environment", "", lookup),
    }
}

fn load_config_text(
    source: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MaasConfig, ConfigErrors> {
    let parsed = yaml::parse::<MaasConfig>(source, text)?;
    let mut config = parsed.value;
    env::apply_environment(&mut config, lookup)?;
    config
        .validate()
        .map_err(|errors| located(source, Some(&parsed.index), errors))?;
    config.validate_secrets()?;
    Ok(config)
}

impl MaasConfig {
    /// Checks values serde cannot: URLs, ranges, combinations.
    pub fn validate(&self) -> Result<(), maas_store::validate::ValidationErrors> {
        let mut errors = Vec::new();
        let mut push = |path: &str, message: String| {
            errors.push(maas_store::validate::ValidationError {
                path: path.into(),
                message,
            });
        };
        for (path, url) in [
            ("proxy.public_url", &self.proxy.public_url),
            ("portal.public_url", &self.portal.public_url),
            ("alerts.webhook_url", &self.alerts.webhook_url),
        ] {
            if let Some(url) = url
                && !is_http_url(url)
            {
                push(path, format!("`{url}` is not an http(s) URL"));
            }
        }
        if !(100..=3_600_000).contains(&self.alerts.interval_ms) {
            push("alerts.interval_ms", "must be from 100 to 3600000".into());
        }
        if !(1..=20).contains(&self.alerts.max_attempts) {
            push("alerts.max_attempts", "must be from 1 to 20".into());
        }
        if (1..100).contains(&self.proxy.report_interval_ms) {
            push(
                "proxy.report_interval_ms",
                "must be at least 100, or 0 for no reports".into(),
            );
        }
        if self.proxy.max_body_bytes < 1024 {
            push("proxy.max_body_bytes", "must be at least 1024".into());
        }
        let color = &self.portal.brand.primary_color;
        if color.len() != 7 || !color.starts_with('#') || !color[1..].bytes().all(|b| b.is_ascii_hexdigit()) {
            push(
                "portal.brand.primary_color",
                format!("`{color}` is not a #rrggbb colour"),
            );
        }
        if self.portal.brand.name.trim().is_empty() {
            push("portal.brand.name", "must not be empty".into());
        }
        if self.portal.session_ttl_hours == 0 {
            push("portal.session_ttl_hours", "must be at least 1".into());
        }
        if self.sso.enabled {
            match &self.sso.issuer_url {
                None => push("sso.issuer_url", "required when SSO is enabled".into()),
                Some(url) if !is_http_url(url) => push("sso.issuer_url", format!("`{url}` is not an http(s) URL")),
                Some(_) => {}
            }
            if self.sso.client_id.as_deref().is_none_or(str::is_empty) {
                push("sso.client_id", "required when SSO is enabled".into());
            }
        }
        if !self.portal.local_accounts && !self.sso.enabled {
            push(
                "portal.local_accounts",
                "nobody can sign in to the portal: local accounts are off and SSO is not enabled \
                 (set sso.enabled: true, or portal.local_accounts: true)"
                    .into(),
            );
        }
        self.validate_access_tokens(&mut push);
        self.telemetry.validate(&mut push);
        if !self.sso.scopes.iter().any(|s| s == "openid") {
            push("sso.scopes", "must include `openid`".into());
        }
        if self.sso.admin_claim.is_some() != self.sso.admin_value.is_some() {
            push(
                "sso.admin_claim",
                "set both admin_claim and admin_value, or neither".into(),
            );
        }
        for (i, range) in self.portal.trusted_proxies.iter().enumerate() {
            if let Err(reason) = maas_store::validate::IpRange::parse(range) {
                push(&format!("portal.trusted_proxies[{i}]"), reason);
            }
        }
        for (i, email) in self.admin.admin_emails.iter().enumerate() {
            if !maas_store::validate::is_email(email) {
                push(
                    &format!("admin.admin_emails[{i}]"),
                    format!("`{email}` is not an email address"),
                );
            }
        }
        match (self.store.kind(), &self.store.redis_url) {
            (StoreKind::Redis, None) => push(
                "store.redis_url",
                "required for the Redis store (or set MAAS_REDIS_URL)".into(),
            ),
            (_, Some(url)) => {
                if let Err(reason) = maas_store::backend::redis_url::parse(url) {
                    push("store.redis_url", reason);
                }
            }
            _ => {}
        }
        let store = &self.store;
        let tls_files = [
            ("store.redis_tls_ca_file", &store.redis_tls_ca_file),
            ("store.redis_tls_cert_file", &store.redis_tls_cert_file),
            ("store.redis_tls_key_file", &store.redis_tls_key_file),
        ];
        let rediss = store
            .redis_url
            .as_deref()
            .is_some_and(maas_store::backend::redis_url::is_tls);
        for (field, file) in tls_files {
            if file.is_some() && !rediss {
                push(
                    field,
                    "only applies to a TLS store.redis_url (rediss://, rediss+sentinel://, rediss+cluster://)".into(),
                );
            }
        }
        match (&store.redis_tls_cert_file, &store.redis_tls_key_file) {
            (Some(_), None) => push(
                "store.redis_tls_key_file",
                "required with store.redis_tls_cert_file (the client certificate's key)".into(),
            ),
            (None, Some(_)) => push(
                "store.redis_tls_cert_file",
                "required with store.redis_tls_key_file (the client certificate)".into(),
            ),
            _ => {}
        }
        let prefix = &self.store.redis_prefix;
        if prefix.is_empty()
            || prefix
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '{' | '}' | ':'))
        {
            push(
                "store.redis_prefix",
                format!("`{prefix}` must be non-empty without spaces, braces or `:`"),
            );
        }
        if !maas_store::model::valid_key_prefix(&self.keys.prefix) {
            push(
                "keys.prefix",
                format!("`{}` must be 2-16 letters, digits, `-` or `_`", self.keys.prefix),
            );
        }
        if !(1..=1_048_576).contains(&self.store.spool_max_mb) {
            push("store.spool_max_mb", "must be between 1 and 1048576 (1 TiB)".into());
        }
        if !(10..=60_000).contains(&self.store.timeout_ms) {
            push("store.timeout_ms", "must be between 10 and 60000".into());
        }
        if !(1..=1_000).contains(&self.store.breaker_failures) {
            push("store.breaker_failures", "must be between 1 and 1000".into());
        }
        if !(60..=604_800).contains(&self.store.outage_max_key_age_secs) {
            push(
                "store.outage_max_key_age_secs",
                "must be between 60 and 604800 (a week)".into(),
            );
        }
        if !(10..=60_000).contains(&self.limits.sync_interval_ms) {
            push("limits.sync_interval_ms", "must be between 10 and 60000".into());
        }
        if !(1..=86_400).contains(&self.limits.hold_ttl_secs) {
            push("limits.hold_ttl_secs", "must be between 1 and 86400".into());
        }
        if self.limits.default_max_tokens == 0 {
            push("limits.default_max_tokens", "must be at least 1".into());
        }
        if let Err(reason) = check_log_filter(&self.logging.level) {
            push("logging.level", reason);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(maas_store::validate::ValidationErrors(errors))
        }
    }

    fn validate_secrets(&self) -> Result<(), ConfigErrors> {
        if self.alerts.webhook_url.is_some() && self.secrets.alerts_webhook_secret.is_none() {
            return Err(ConfigError {
                source: "environment".into(),
                line: None,
                field: "MAAS_ALERTS_WEBHOOK_SECRET".into(),
                message: "alerts.webhook_url is set but no secret signs its calls: set MAAS_ALERTS_WEBHOOK_SECRET \
                          or alerts.webhook_secret_file"
                    .into(),
            }
            .into());
        }
        if self.sso.enabled && self.secrets.sso_client_secret.is_none() {
            return Err(ConfigError {
                source: "environment".into(),
                line: None,
                field: "MAAS_SSO_CLIENT_SECRET".into(),
                message:
                    "SSO is enabled but has no client secret: set MAAS_SSO_CLIENT_SECRET or sso.client_secret_file"
                        .into(),
            }
            .into());
        }
        Ok(())
    }
}

pub(crate) fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty()))
}

fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for part in filter.split(',').map(str::trim) {
        let level = part.rsplit_once('=').map_or(part, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{part}` is not a level (off, error, warn, info, debug, trace) or target=level"
            ));
        }
    }
    Ok(())
}
