//! `maas.yaml`: server settings. Every field has a default, so the product
//! runs without a file; environment variables override the file (see
//! [`crate::env`]). Secrets are never read from this file, only from
//! environment variables or the files that `*_file` fields name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use maas_store::{Environment, RedisTls, StoreLocation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaasConfig {
    pub proxy: ProxySettings,
    pub portal: PortalSettings,
    pub admin: AdminSettings,
    pub sso: SsoSettings,
    pub store: StoreSettings,
    pub keys: KeySettings,
    pub limits: LimitSettings,
    pub alerts: AlertSettings,
    pub access_tokens: crate::access_tokens::AccessTokenSettings,
    pub telemetry: crate::telemetry::TelemetrySettings,
    pub logging: LoggingSettings,
    pub sim: SimSettings,
    /// A catalog file `maas up` applies at start (relative to the working
    /// directory); none by default.
    pub catalog: Option<PathBuf>,
    /// Secrets, filled from the environment and `*_file` paths; never
    /// read from or written to YAML.
    #[serde(skip)]
    pub secrets: Secrets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Prometheus `/metrics` (9421, as APIcast).
    pub metrics_listen: SocketAddr,
    /// The environment whose product releases this proxy serves.
    pub environment: Environment,
    /// The API's public base URL, shown to developers as their endpoint;
    /// by default the listen address as a client on this machine reaches
    /// it (see [`ProxySettings::advertised_url`]).
    pub public_url: Option<String>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Worker threads serving requests; 0 = one per core.
    pub threads: usize,
    /// On SIGTERM/SIGINT: stop accepting, let requests and streams in
    /// flight finish for up to this many seconds, write the usage, exit.
    pub shutdown_timeout_secs: u64,
    /// PEM file of the CAs trusted for `https://` backends, instead of the
    /// system's trust store (e.g. the cluster's service CA).
    pub upstream_ca_file: Option<PathBuf>,
    /// Send `x-maas-overhead-us` on proxied responses: the microseconds the
    /// gateway spent on the request before the response headers left.
    pub overhead_header: bool,
    /// How often this proxy reports its replicas' live state to the store
    /// for the admin console (milliseconds); 0: never.
    pub report_interval_ms: u64,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9421)),
            environment: Environment::Production,
            public_url: None,
            max_body_bytes: 8 * 1024 * 1024,
            threads: 0,
            shutdown_timeout_secs: 30,
            upstream_ca_file: None,
            overhead_header: false,
            report_interval_ms: 5_000,
        }
    }
}

impl ProxySettings {
    /// Where developers call the API, without a trailing slash: `public_url`
    /// when set, else the listen address.
    pub fn advertised_url(&self) -> String {
        advertised_url(self.public_url.as_deref(), self.listen)
    }
}

/// `configured` without its trailing slash, else `http://` and the address
/// a client on this machine uses to reach `listen` (`localhost` for a
/// wildcard address, so the URL works whatever the interfaces).
pub fn advertised_url(configured: Option<&str>, listen: SocketAddr) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_owned();
    }
    let port = listen.port();
    match listen.ip() {
        ip if ip.is_unspecified() => format!("http://localhost:{port}"),
        std::net::IpAddr::V4(ip) => format!("http://{ip}:{port}"),
        std::net::IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalSettings {
    /// Developer portal, admin console and `/admin/api/v1`.
    pub listen: SocketAddr,
    /// The portal's public URL (SSO redirects, links); by default the
    /// listen address (see [`PortalSettings::advertised_url`]).
    pub public_url: Option<String>,
    /// Sign-up and sign-in with email and password.
    pub local_accounts: bool,
    pub session_ttl_hours: u32,
    /// Templates here override the built-in ones of the same name.
    pub templates_dir: Option<PathBuf>,
    /// Reverse proxies (ingress, load balancer) in front of the portal,
    /// as addresses or CIDRs: from these alone `X-Forwarded-For` names
    /// the client, for sign-in limits and the audit log.
    pub trusted_proxies: Vec<String>,
    /// Cookies marked `Secure`: by default when `public_url` is https.
    pub secure_cookies: Option<bool>,
    pub brand: BrandSettings,
    /// How many password checks (Argon2, ~19 MiB and tens of ms each) run
    /// at once and wait for a turn.
    pub password_checks: PasswordCheckSettings,
}

/// `portal.password_checks`: past `concurrent` running and `queued`
/// waiting, or after `wait_seconds` in the queue, a sign-in or sign-up is
/// answered 503 (busy) at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordCheckSettings {
    /// Checks at once; 0 means one per core.
    pub concurrent: usize,
    pub queued: usize,
    pub wait_seconds: u64,
}

impl Default for PasswordCheckSettings {
    fn default() -> Self {
        PasswordCheckSettings {
            concurrent: 0,
            queued: 64,
            wait_seconds: 10,
        }
    }
}

/// How the portal presents itself (the walkthrough's "MaaS on RHOAI").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrandSettings {
    /// In the navigation bar and page titles.
    pub name: String,
    /// The home page's heading.
    pub title: String,
    /// The home page's text, plain text; blank lines separate paragraphs.
    pub home_text: String,
    /// A PNG, JPEG or SVG file shown beside the heading.
    pub logo_file: Option<PathBuf>,
    /// Accent colour, `#rrggbb`.
    pub primary_color: String,
}

impl Default for BrandSettings {
    fn default() -> Self {
        BrandSettings {
            name: "MaaS".into(),
            title: "Models as a Service".into(),
            home_text: "Access to the models hosted here requires an API key.\n\n\
                        Create an application for a model to get one, then call the model \
                        with any OpenAI-compatible client."
                .into(),
            logo_file: None,
            primary_color: "#0f62fe".into(),
        }
    }
}

impl PortalSettings {
    /// The portal's base URL, without a trailing slash: `public_url` when
    /// set, else the listen address.
    pub fn advertised_url(&self) -> String {
        advertised_url(self.public_url.as_deref(), self.listen)
    }
}

impl Default for PortalSettings {
    fn default() -> Self {
        PortalSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            public_url: None,
            local_accounts: true,
            session_ttl_hours: 8,
            templates_dir: None,
            trusted_proxies: Vec::new(),
            secure_cookies: None,
            brand: BrandSettings::default(),
            password_checks: PasswordCheckSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// File holding the bootstrap admin token (else `MAAS_ADMIN_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// Company sign-in users whose provider verified one of these emails
    /// are admins whatever their group claims say (never a local sign-up).
    pub admin_emails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoSettings {
    pub enabled: bool,
    /// Shown on the sign-in button.
    pub display_name: String,
    /// OpenID issuer, e.g. `https://keycloak.example.com/realms/maas`.
    pub issuer_url: Option<String>,
    pub client_id: Option<String>,
    /// File holding the client secret (else `MAAS_SSO_CLIENT_SECRET`).
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    /// Claim naming the user's organization (the walkthrough's mapper).
    pub account_claim: String,
    /// Claim and value that make a user an admin, e.g. `groups` / `maas-admins`.
    pub admin_claim: Option<String>,
    pub admin_value: Option<String>,
    /// New SSO users may sign in at once; otherwise they wait for an admin.
    pub auto_approve: bool,
    /// How the client secret goes to the token endpoint.
    pub token_auth_method: TokenAuthMethod,
    /// What a sign-in does when the provider names another organization
    /// than the user's account is bound to.
    pub organization_change: OrganizationChange,
}

/// `sso.organization_change`: the provider moved a user to another
/// organization since their last sign-in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationChange {
    /// The user joins the new organization's account.
    #[default]
    Move,
    /// The sign-in is refused until an administrator moves the user.
    Refuse,
}

/// `sso.token_auth_method`: how the portal authenticates at the
/// provider's token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    /// `client_secret_basic`, unless the provider's discovery document
    /// lists only `client_secret_post`.
    #[default]
    Auto,
    ClientSecretBasic,
    ClientSecretPost,
}

impl Default for SsoSettings {
    fn default() -> Self {
        SsoSettings {
            enabled: false,
            display_name: "Company SSO".into(),
            issuer_url: None,
            client_id: None,
            client_secret_file: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            account_claim: "org_name".into(),
            admin_claim: None,
            admin_value: None,
            auto_approve: true,
            token_auth_method: TokenAuthMethod::Auto,
            organization_change: OrganizationChange::Move,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Embedded,
    Redis,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `embedded` or `redis`; by default Redis when `redis_url` is set.
    pub backend: Option<StoreKind>,
    pub redis_url: Option<String>,
    /// Every Redis key starts with `<prefix>:`.
    pub redis_prefix: String,
    /// `rediss://` only: the CA that signed the server's certificate (PEM),
    /// instead of the system's trust store.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// `rediss://` only: a client certificate and its key (PEM), for
    /// servers that require mutual TLS.
    pub redis_tls_cert_file: Option<PathBuf>,
    pub redis_tls_key_file: Option<PathBuf>,
    /// Directory of the embedded store's file.
    pub data_dir: PathBuf,
    /// What the proxy does while the store does not answer.
    pub outage: OutageMode,
    /// `serve_cached`: how long a key the store vouched for keeps working
    /// while the store does not answer.
    pub outage_max_key_age_secs: u64,
    /// How long a request waits for a store call before it counts as failed.
    pub timeout_ms: u64,
    /// Consecutive failed store calls that open the circuit breaker.
    pub breaker_failures: u32,
    /// Redis only: where the proxy spools usage the store does not take
    /// (default `<data_dir>/spool`).
    pub spool_dir: Option<PathBuf>,
    /// Largest spool file, in MiB; past it usage waits in memory only.
    pub spool_max_mb: u64,
    /// `always`: fsync every spooled batch; `never`: leave it to the OS.
    pub spool_fsync: SpoolFsync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFsync {
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageMode {
    /// Known keys keep working; limits fall back to each replica's counters.
    ServeCached,
    /// Requests that need the store get 503.
    FailClosed,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            backend: None,
            redis_url: None,
            redis_prefix: "maas".into(),
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            data_dir: PathBuf::from("./data"),
            outage: OutageMode::ServeCached,
            outage_max_key_age_secs: 3600,
            timeout_ms: 500,
            breaker_failures: 3,
            spool_dir: None,
            spool_max_mb: 1024,
            spool_fsync: SpoolFsync::Always,
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("redis_tls_cert_file", &self.redis_tls_cert_file)
            .field("redis_tls_key_file", &self.redis_tls_key_file)
            .field("data_dir", &self.data_dir)
            .field("outage", &self.outage)
            .field("outage_max_key_age_secs", &self.outage_max_key_age_secs)
            .field("timeout_ms", &self.timeout_ms)
            .field("breaker_failures", &self.breaker_failures)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_mb", &self.spool_max_mb)
            .field("spool_fsync", &self.spool_fsync)
            .finish()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`; a sentinel URL's
/// `sentinel_password` is hidden too.
pub fn redact_url(url: &str) -> String {
    maas_store::backend::redis_url::redact(url)
}

impl StoreSettings {
    pub fn kind(&self) -> StoreKind {
        self.backend.unwrap_or(if self.redis_url.is_some() {
            StoreKind::Redis
        } else {
            StoreKind::Embedded
        })
    }

    pub fn location(&self) -> StoreLocation {
        match (self.kind(), &self.redis_url) {
            (StoreKind::Redis, Some(url)) => StoreLocation::Redis {
                url: url.clone(),
                prefix: self.redis_prefix.clone(),
                tls: RedisTls {
                    ca_file: self.redis_tls_ca_file.clone(),
                    cert_file: self.redis_tls_cert_file.clone(),
                    key_file: self.redis_tls_key_file.clone(),
                },
            },
            _ => StoreLocation::Embedded {
                data_dir: self.data_dir.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    /// Prefix of generated API keys, recognizable by secret scanners.
    pub prefix: String,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            prefix: maas_store::model::DEFAULT_KEY_PREFIX.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// One atomic check-and-add in the store per request: exact across replicas.
    Strict,
    /// Admit from local counters, sync deltas every `sync_interval_ms`.
    Local,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub mode: LimitMode,
    pub sync_interval_ms: u64,
    /// A token hold nobody settled (its proxy crashed) is released after this.
    pub hold_ttl_secs: u64,
    /// Completion tokens held for a request without `max_tokens` on a plan
    /// with token limits and no `max_tokens` cap; the request is capped to it.
    pub default_max_tokens: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            mode: LimitMode::Strict,
            sync_interval_ms: 100,
            hold_ttl_secs: 900,
            default_max_tokens: 4096,
        }
    }
}

/// Budget alerts (`maas portal` and `maas up` check budgets and send them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Where alerts are POSTed as signed JSON; without one they are only
    /// shown in the portal and the console.
    pub webhook_url: Option<String>,
    /// File holding the signing secret (else `MAAS_ALERTS_WEBHOOK_SECRET`).
    pub webhook_secret_file: Option<PathBuf>,
    /// How often spend is compared with budgets.
    pub interval_ms: u64,
    /// Attempts per alert before its delivery is given up.
    pub max_attempts: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook_url: None,
            webhook_secret_file: None,
            interval_ms: 5_000,
            max_attempts: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a filter such as `info,maas_store=debug`.
    pub level: String,
    pub format: LogFormat,
    /// One JSON line per proxied request.
    pub access_log: bool,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            level: "info".into(),
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    pub listen: SocketAddr,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
        }
    }
}

/// A secret value; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub admin_token: Option<Secret>,
    pub sso_client_secret: Option<Secret>,
    /// Signs budget alerts' webhook calls.
    pub alerts_webhook_secret: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_urls_follow_the_listen_address_unless_configured() {
        let at = |listen: &str| advertised_url(None, listen.parse().unwrap());
        assert_eq!(at("0.0.0.0:8080"), "http://localhost:8080");
        assert_eq!(at("[::]:9090"), "http://localhost:9090");
        assert_eq!(at("127.0.0.1:18080"), "http://127.0.0.1:18080");
        assert_eq!(at("10.1.2.3:80"), "http://10.1.2.3:80");
        assert_eq!(at("[::1]:8080"), "http://[::1]:8080");
        assert_eq!(
            advertised_url(Some("https://api.example.com/"), "0.0.0.0:8080".parse().unwrap()),
            "https://api.example.com"
        );
        let proxy = ProxySettings {
            listen: "127.0.0.1:7000".parse().unwrap(),
            ..ProxySettings::default()
        };
        assert_eq!(proxy.advertised_url(), "http://127.0.0.1:7000");
        assert_eq!(PortalSettings::default().advertised_url(), "http://localhost:3000");
    }
}
