//! `maas-portal`: the developer portal, served by `maas portal` and
//! `maas up` beside the admin API on `portal.listen`.
//!
//! Server-rendered pages ([minijinja] templates compiled in, each
//! overridable from `portal.templates_dir`), plain HTML forms that work
//! without JavaScript, and assets served by the binary. Developers sign up
//! or sign in, browse the models, create applications, get keys and the
//! endpoint to call.
//!
//! - **Sessions** ([`session`]): a random id in an `HttpOnly`,
//!   `SameSite=Lax` cookie (`Secure` behind https), kept in the store under
//!   its hash so every replica shares it, a new id at every sign-in.
//! - **Forms** ([`session::Posted`]): every state-changing form carries a
//!   CSRF token (the session's, or a double-submit cookie before sign-in),
//!   checked before the handler runs; 403 otherwise.
//! - **Headers** ([`security`]): a CSP without inline script or style,
//!   `frame-ancestors 'none'`, `nosniff` on every answer (assets and the
//!   admin API merged beside included, [`with_security_headers`]); `next=`
//!   redirects only to own paths; the client address is believed from
//!   `X-Forwarded-For` only behind `portal.trusted_proxies`.
//! - **Accounts** ([`accounts`], [`sso`]): attempts counted before the
//!   password check, sign-up that reveals nobody and never makes admins,
//!   company sign-in that joins only the account bound to its provider.
//! - **Errors**: a page that says what went wrong, with the right status.

pub mod accounts;
mod assets;
pub mod budget_alerts;
pub mod budgets;
pub mod console;
pub mod developer;
pub mod keys;
pub mod passwords;
mod probes;
pub mod profile;
pub mod reference;
mod render;
pub mod security;
pub mod session;
pub mod sso;
pub mod statistics;
pub mod team;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use maas_store::Store;

pub use render::{PortalError, TemplateError};

/// What the portal is told at start.
#[derive(Debug, Clone)]
pub struct PortalOptions {
    /// The portal's own public URL (`portal.public_url`).
    pub public_url: String,
    /// Where developers call the models (`proxy.public_url`).
    pub gateway_url: String,
    /// Sign-up and sign-in with email and password.
    pub local_accounts: bool,
    pub session_ttl: std::time::Duration,
    /// Mark cookies `Secure`.
    pub secure_cookies: bool,
    /// Templates here override the built-in ones of the same name.
    pub templates_dir: Option<PathBuf>,
    pub brand: Brand,
    /// Emails that make a company sign-in an admin when its provider
    /// verified them (`admin.admin_emails`); never a local sign-up.
    pub admin_emails: Vec<String>,
    /// Sign-in through the company's OpenID provider, if configured.
    pub sso: Option<sso::SsoOptions>,
    /// Proxies whose `X-Forwarded-For` names the client (`portal.trusted_proxies`).
    pub trusted_proxies: security::TrustedProxies,
    /// How many password checks run and wait (`portal.password_checks`).
    pub password_checks: passwords::PasswordCheckLimits,
}

impl Default for PortalOptions {
    fn default() -> Self {
        PortalOptions {
            public_url: "http://localhost:3000".into(),
            gateway_url: "http://localhost:8080".into(),
            local_accounts: true,
            session_ttl: std::time::Duration::from_secs(8 * 3600),
            secure_cookies: false,
            templates_dir: None,
            brand: Brand::default(),
            admin_emails: Vec::new(),
            sso: None,
            trusted_proxies: security::TrustedProxies::default(),
            password_checks: passwords::PasswordCheckLimits::default(),
        }
    }
}

/// How the portal presents itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Brand {
    pub name: String,
    pub title: String,
    /// Plain text; blank lines separate paragraphs.
    pub home_text: String,
    pub primary_color: String,
    /// The logo's bytes and content type, served at `/assets/logo`.
    #[serde(skip)]
    pub logo: Option<(Vec<u8>, &'static str)>,
}

impl Default for Brand {
    fn default() -> Self {
        Brand {
            name: "MaaS".into(),
            title: "Models as a Service".into(),
            home_text: "Access to the models hosted here requires an API key.".into(),
            primary_color: "#0f62fe".into(),
            logo: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct PortalState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    options: PortalOptions,
    templates: render::Templates,
    password_checks: passwords::PasswordChecks,
    sso: Option<sso::Sso>,
    trusted_proxies: security::TrustedProxies,
}

impl PortalState {
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn options(&self) -> &PortalOptions {
        &self.inner.options
    }

    pub fn sso(&self) -> Option<&sso::Sso> {
        self.inner.sso.as_ref()
    }

    pub fn trusted_proxies(&self) -> &security::TrustedProxies {
        &self.inner.trusted_proxies
    }

    /// The provider people sign in with, whose subjects name the people
    /// behind access tokens when both come from it.
    pub fn token_issuer(&self) -> Option<&str> {
        self.inner.options.sso.as_ref().map(|sso| sso.issuer_url.as_str())
    }
}

/// The portal's pages. Fails when a template (built in or overridden)
/// does not compile, naming the file and line.
pub fn router(store: Store, options: PortalOptions) -> Result<Router, TemplateError> {
    let templates = render::Templates::load(options.templates_dir.as_deref())?;
    let csp = content_security_policy(&options);
    let state = PortalState {
        inner: Arc::new(Inner {
            store,
            templates,
            password_checks: passwords::PasswordChecks::new(options.password_checks),
            sso: options.sso.clone().map(sso::Sso::new),
            trusted_proxies: options.trusted_proxies.clone(),
            options,
        }),
    };
    let pages = Router::new()
        .route("/", get(developer::home))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/sign-in", get(accounts::sign_in_page).post(accounts::sign_in))
        .route("/sign-up", get(accounts::sign_up_page).post(accounts::sign_up))
        .route("/sign-out", post(accounts::sign_out))
        .route("/sso/login", get(sso::login))
        .route("/sso/callback", get(sso::callback))
        .route("/models", get(developer::models))
        .route("/models/{product}", get(reference::product))
        .route("/models/{product}/openapi.json", get(reference::openapi))
        .route("/models/{product}/api", get(reference::viewer))
        .route("/assets/api-viewer.js", get(reference::viewer_script))
        .route(
            "/applications",
            get(developer::applications).post(developer::create_application),
        )
        .route("/applications/new", get(developer::new_application))
        .route("/account", get(team::account).post(team::update_account))
        .route("/account/invitations", post(team::invite))
        .route("/account/invitations/{id}/cancel", post(team::cancel_invitation))
        .route("/account/members/{id}/role", post(team::change_role))
        .route(
            "/account/members/{id}/remove",
            get(team::confirm_remove_member).post(team::remove_member),
        )
        .route("/join/{secret}", get(team::join_page).post(team::join))
        .route("/profile", get(profile::page).post(profile::rename))
        .route("/profile/password", post(profile::change_password))
        .route("/profile/sessions/end-others", post(profile::end_other_sessions))
        .route("/profile/sessions/{handle}/end", post(profile::end_session))
        .route(
            "/reset-password/{secret}",
            get(profile::reset_page).post(profile::reset),
        )
        .route("/applications/{id}", get(developer::application))
        .route("/applications/{id}/plan", post(developer::change_plan))
        .route("/applications/{id}/budgets", post(budgets::owner_set_budgets))
        .route("/applications/{id}/statistics", get(statistics::page))
        .route("/applications/{id}/statistics.csv", get(statistics::csv))
        .route(
            "/applications/{id}/delete",
            get(developer::confirm_delete_application).post(developer::delete_application),
        )
        .route("/applications/{id}/keys", post(keys::create_key))
        .route(
            "/keys/{id}/revoke",
            get(keys::confirm_revoke_key).post(keys::revoke_key),
        )
        .route("/keys/{id}/rotate", post(keys::rotate_key))
        .route(
            "/keys/{id}/budgets",
            get(budgets::owner_key_budgets).post(budgets::owner_set_key_budgets),
        )
        .route("/admin", get(console::overview))
        .route("/admin/applications", get(console::applications))
        .route("/admin/applications/{id}", get(console::application))
        .route("/admin/applications/{id}/plan", post(console::change_plan))
        .route("/admin/applications/{id}/budgets", post(budgets::console_set_budgets))
        .route(
            "/admin/applications/{id}/organization-budgets",
            post(budgets::console_set_organization_budgets),
        )
        .route("/admin/applications/{id}/{action}", post(console::application_action))
        .route("/admin/keys/{id}/revoke", post(console::revoke_key))
        .route(
            "/admin/keys/{id}/budgets",
            get(budgets::console_key_budgets).post(budgets::console_set_key_budgets),
        )
        .route("/admin/backends", get(console::backends))
        .route("/admin/accounts", get(console::accounts))
        .route("/admin/accounts/{id}/{action}", post(console::account_action))
        .route("/admin/users/{id}/{action}", post(console::user_action))
        .route("/admin/products", get(console::products))
        .route(
            "/admin/products/{name}/edit",
            get(console::edit_product).post(console::save_product),
        )
        .route("/admin/products/{name}/promote", post(console::promote))
        .route("/admin/products/{name}/rollback", post(console::rollback))
        .route("/admin/audit", get(console::audit))
        .route("/admin/alerts", get(budgets::console_alerts))
        .route("/assets/{file}", get(assets::serve))
        .fallback(|| async { PortalError::not_found("No such page.") })
        .layer(middleware::from_fn_with_state(state.clone(), render::error_pages))
        // Forms are small; past this the post is refused before any field is read.
        .layer(DefaultBodyLimit::max(FORM_LIMIT_BYTES))
        .with_state(state);
    let viewer_assets = swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: reference::VIEWER_ASSETS,
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/models"),
        title: None,
    });
    Ok(with_security_headers(pages.merge(viewer_assets), csp))
}

/// The most a form post may carry; fields have their own, smaller limits.
pub const FORM_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// The portal's policy for pages: its own scripts and styles, and the
/// OpenID provider as a form target for sign-out.
pub fn content_security_policy(options: &PortalOptions) -> axum::http::HeaderValue {
    security::content_security_policy(
        options
            .sso
            .as_ref()
            .and_then(|s| security::origin(&s.issuer_url))
            .as_deref(),
    )
}

/// `router` with the portal's security headers on every answer: pages,
/// assets, Swagger UI's files and the admin API merged beside them.
pub fn with_security_headers(router: Router, csp: axum::http::HeaderValue) -> Router {
    router.layer(middleware::from_fn_with_state(csp, security::headers))
}
