//! Admin authentication, two ways:
//!
//! - **Bearer tokens**, compared by their SHA-256 (the secrets themselves are
//!   never kept), each with a scope: the token from the configuration, and
//!   tokens kept in the store (the bootstrap token `maas` makes on first
//!   start, and those made through `/tokens`), so every replica knows them.
//! - **The portal's session**: the [`SESSION_COOKIE`] of a signed-in user
//!   with the `admin` role, as the admin console's pages call the API. A
//!   write with a session must also carry the session's CSRF token in
//!   [`CSRF_HEADER`], so another site cannot make the browser write.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::Method;
use axum::http::request::Parts;
use maas_store::Actor;
use maas_store::Store;
use maas_store::model::{KeyHash, UserRole, UserState};

use crate::AdminState;
use crate::error::ApiError;

/// What a token may do.
pub use maas_store::model::AdminScope as Scope;

/// The tokens the API accepts (their hashes only).
#[derive(Default)]
pub struct AdminTokens {
    tokens: Vec<(KeyHash, Scope, String)>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokens({} tokens)", self.tokens.len())
    }
}

impl AdminTokens {
    /// With the bootstrap token (write scope), if configured.
    pub fn new(bootstrap: Option<&str>) -> AdminTokens {
        let mut tokens = AdminTokens::default();
        if let Some(secret) = bootstrap.filter(|s| !s.is_empty()) {
            tokens.add(secret, Scope::Write, "bootstrap");
        }
        tokens
    }

    /// Accepts `secret` with `scope`, logged in the audit log as `name`.
    pub fn add(&mut self, secret: &str, scope: Scope, name: &str) {
        self.tokens.push((KeyHash::of(secret), scope, name.to_owned()));
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    fn find(&self, secret: &str) -> Option<(Scope, &str)> {
        let hash = KeyHash::of(secret);
        self.tokens
            .iter()
            .find(|(h, _, _)| *h == hash)
            .map(|(_, scope, name)| (*scope, name.as_str()))
    }
}

/// The portal's session cookie.
pub const SESSION_COOKIE: &str = "maas_session";
/// The header a session-authenticated write repeats the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where the portal keeps a session's CSRF token ([`maas_store::SessionRecord::data`]).
pub const SESSION_CSRF_FIELD: &str = "csrf";

/// An authenticated admin request: its scope, and the store acting as it
/// (so the audit log names the token and the client address).
pub struct Admin {
    pub scope: Scope,
    pub store: Store,
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Admin, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let writes = !matches!(parts.method, Method::GET | Method::HEAD);
        let bearer = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let (scope, actor) = match (bearer, cookie(&parts.headers, SESSION_COOKIE)) {
            (Some(secret), _) => {
                let (scope, name) = match state.tokens.find(secret) {
                    Some((scope, name)) => (scope, name.to_owned()),
                    None => {
                        let token = state.store.lookup_admin_token(&KeyHash::of(secret)).await?;
                        let token = token.ok_or_else(ApiError::unauthorized)?;
                        (token.scope, token.id)
                    }
                };
                (scope, Actor::new("admin_token", &name, ip))
            }
            (None, Some(session)) => {
                let user = session_admin(&state.store, parts, session, writes).await?;
                (Scope::Write, Actor::new("user", &user, ip))
            }
            (None, None) => return Err(ApiError::unauthorized()),
        };
        if scope == Scope::Read && writes {
            return Err(ApiError::forbidden("This token may only read."));
        }
        Ok(Admin {
            scope,
            store: state.store.as_actor(actor),
        })
    }
}

/// The session id in the request's cookies, if any.
/// The value of cookie `name` in a request's headers (the portal reads
/// its cookies with this too).
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The id of the active admin user signed in with `session`.
async fn session_admin(store: &Store, parts: &Parts, session: &str, writes: bool) -> Result<String, ApiError> {
    let (record, user) = store
        .session_with_user(session)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if user.state != UserState::Active || user.role != UserRole::Admin {
        return Err(ApiError::forbidden(
            "The admin API needs a user with the admin role (or an admin token).",
        ));
    }
    if writes {
        let expected = record.data.get(SESSION_CSRF_FIELD).and_then(|v| v.as_str());
        let given = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let matches = matches!((expected, given), (Some(e), Some(g)) if !e.is_empty() && constant_time_eq(e, g));
        if !matches {
            return Err(ApiError::forbidden(
                "A write with the portal session must repeat its CSRF token in X-CSRF-Token.",
            ));
        }
    }
    Ok(user.id)
}

/// Compares without stopping at the first difference, so timing says
/// nothing about how much of a guess was right.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
