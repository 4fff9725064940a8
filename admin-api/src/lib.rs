//! `maas-admin-api`: the REST API operators, CI and GitOps use to run MaaS
//! without clicking, mounted at `/admin/api/v1` by `maas portal` and
//! `maas up`. JSON in and out, over the same [`maas_store::Store`] calls
//! `maas apply` and `maas export` make.
//!
//! - **Authentication**: `Authorization: Bearer <admin token>`; the
//!   bootstrap token comes from `MAAS_ADMIN_TOKEN` or `admin.token_file`
//!   ([`AdminTokens`]). No token: 401; a read-only token writing: 403.
//! - **Catalog** ([`catalog`]): backends, products (drafts) and plans, with
//!   `ETag` on every read and `If-Match` / `If-None-Match: *` on every
//!   write; a stale `If-Match` is 409 and changes nothing.
//! - **Tenants** ([`tenancy`]): accounts, applications (approve, suspend,
//!   resume, change plan) and keys (created with their secret shown once,
//!   listed by prefix and last 4, revoked, rotated with a grace period).
//! - **Operations** ([`operations`]): promotion to staging and production,
//!   rollback, users, and the audit log.
//! - **Analytics** ([`analytics`]): usage series per application, product or
//!   account (JSON or CSV), top applications, cost from plan prices.
//! - **Errors** ([`error`]): `{"error": {"code", "message", "fields": [{"field",
//!   "message"}]}}`; validation errors name each field (`limits[0].value`).
//! - **Lists**: `?limit=` (1–500, default 100) and `?after=<last id>`,
//!   answered as `{"data": [...], "next": <id or null>}`.
//!
//! ```no_run
//! # async fn run(store: maas_store::Store) -> std::io::Result<()> {
//! let app = maas_admin_api::router(store, maas_admin_api::AdminTokens::new(Some("s3cret")));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod analytics;
pub mod auth;
pub mod catalog;
pub mod error;
mod json;
pub mod operations;
mod paging;
pub mod tenancy;

use std::sync::Arc;

use axum::Router;
use maas_store::Store;

pub use auth::{AdminTokens, Scope};

/// Where the API is mounted.
pub const BASE_PATH: &str = "/admin/api/v1";

/// What every handler shares.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub tokens: Arc<AdminTokens>,
}

/// The admin API, mounted at [`BASE_PATH`].
pub fn router(store: Store, tokens: AdminTokens) -> Router {
    let state = AdminState {
        store,
        tokens: Arc::new(tokens),
    };
    Router::new().nest(
        BASE_PATH,
        catalog::routes()
            .merge(tenancy::routes())
            .merge(operations::routes())
            .merge(analytics::routes())
            .fallback(|| async { error::ApiError::not_found_route() })
            .with_state(state),
    )
}
