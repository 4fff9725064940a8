//! `maas-admin-api`: the REST API operators, CI and GitOps use to run MaaS
//! without clicking, mounted at `/admin/api/v1` by `maas portal` and
//! `maas up`. JSON in and out, over the same [`maas_store::Store`] calls
//! `maas apply` and `maas export` make.
//!
//! - **Authentication** ([`auth`]): `Authorization: Bearer <admin token>`
//!   (from `MAAS_ADMIN_TOKEN` or `admin.token_file`, the bootstrap token
//!   printed at first start, or made through `/tokens`), or the portal
//!   session of a user with the admin role (writes also send its CSRF
//!   token). No credentials: 401; a read-only token writing, or a
//!   non-admin session: 403.
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
//! - **Documentation** ([`docs`]): the OpenAPI 3.1 document, generated
//!   from the handlers as they are routed, at `/admin/api/v1/openapi.json`,
//!   and Swagger UI (assets in the binary) at `/admin/api/v1/docs`.
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
pub mod budgets;
pub mod catalog;
pub mod conditional;
pub mod docs;
pub mod error;
mod json;
pub mod operations;
mod paging;
pub mod tenancy;

use std::sync::Arc;

use axum::Router;
use maas_store::Store;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{AdminTokens, CSRF_HEADER, SESSION_COOKIE, SESSION_CSRF_FIELD, Scope};

/// Where the API is mounted.
pub const BASE_PATH: &str = "/admin/api/v1";

/// What every handler shares.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub tokens: Arc<AdminTokens>,
}

/// Every route with its documentation, relative to [`BASE_PATH`].
fn api_routes() -> OpenApiRouter<AdminState> {
    catalog::routes()
        .merge(tenancy::routes())
        .merge(budgets::routes())
        .merge(operations::routes())
        .merge(analytics::routes())
}

/// The OpenAPI 3.1 document of the API (served at `/admin/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, collected) = api_routes().split_for_parts();
    docs::document(collected)
}

/// The admin API, mounted at [`BASE_PATH`], with its OpenAPI document and
/// Swagger UI.
pub fn router(store: Store, tokens: AdminTokens) -> Router {
    let state = AdminState {
        store,
        tokens: Arc::new(tokens),
    };
    let (api, collected) = api_routes().split_for_parts();
    let doc = docs::document(collected);
    Router::new().merge(docs::routes(&doc)).nest(
        BASE_PATH,
        api.fallback(|| async { error::ApiError::not_found_route() })
            .with_state(state),
    )
}
