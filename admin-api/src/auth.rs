//! Admin authentication: bearer tokens, compared by their SHA-256 (the
//! secrets themselves are never kept), each with a scope: the bootstrap
//! token from the configuration, and tokens made through `/tokens` (kept in
//! the store, so every replica knows them).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::Method;
use axum::http::request::Parts;
use maas_store::Actor;
use maas_store::Store;
use maas_store::model::KeyHash;

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

/// An authenticated admin request: its scope, and the store acting as it
/// (so the audit log names the token and the client address).
pub struct Admin {
    pub scope: Scope,
    pub store: Store,
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Admin, ApiError> {
        let secret = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let (scope, name) = match state.tokens.find(secret) {
            Some((scope, name)) => (scope, name.to_owned()),
            None => {
                let token = state.store.lookup_admin_token(&KeyHash::of(secret)).await?;
                let token = token.ok_or_else(ApiError::unauthorized)?;
                (token.scope, token.id)
            }
        };
        let reads = matches!(parts.method, Method::GET | Method::HEAD);
        if scope == Scope::Read && !reads {
            return Err(ApiError::forbidden("This token may only read."));
        }
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(Admin {
            scope,
            store: state.store.as_actor(Actor::new("admin_token", &name, ip)),
        })
    }
}
