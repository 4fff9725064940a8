//! Promotion, users and the audit log.
//!
//! | route | methods |
//! | --- | --- |
//! | `/products/{name}/releases` | `GET`: every released version and what `staging` and `production` serve |
//! | `/products/{name}/promote` | `POST {"environment": "staging"}` releases the draft (a new version when it changed) to staging; `{"environment": "production"}` serves staging's version in production |
//! | `/products/{name}/rollback` | `POST {"environment", "version"}`: serve an earlier release |
//! | `/users` | `GET` (filter `account_id`), `POST` (`account_id`, `email`, `display_name`, `role`, `state`) |
//! | `/users/{id}` | `GET`, `PATCH` (`display_name`, `role`, `state`), `DELETE` |
//! | `/audit` | `GET` (filters `entity`, `entity_id`, `actor_id`; `before` an entry id; newest first) |
//! | `/tokens` | `GET` (name, scope, last 4), `POST {"name", "scope": "read" \| "write"}` (the answer carries the `secret`, the only time it is shown) |
//! | `/tokens/{id}` | `DELETE`: refused from the next request on |
//!
//! Proxies pick promotions and rollbacks up from the change feed, without
//! a restart. Password hashes never appear in answers.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maas_store::model::{AdminScope, AdminToken, SsoIdentity, User, UserRole, UserState};
use maas_store::{AuditEntry, AuditQuery, Environment, NewUser, Page, ProductRelease, UserUpdate};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::AdminState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::{JsonObject, QueryParams};
use crate::paging::{DEFAULT_LIMIT, ListPage, limit_or};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/products/{name}/releases", get(releases))
        .route("/products/{name}/promote", post(promote))
        .route("/products/{name}/rollback", post(rollback))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).patch(update_user).delete(delete_user))
        .route("/audit", get(audit))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(delete_token))
}

#[derive(Serialize)]
struct Releases {
    data: Vec<ProductRelease>,
    /// The version each environment serves, if any.
    staging: Option<u64>,
    production: Option<u64>,
}

async fn releases(admin: Admin, Path(name): Path<String>) -> Result<Json<Releases>, ApiError> {
    if admin.store.get_product(&name).await?.is_none() {
        return Err(ApiError::not_found("product", &name));
    }
    let data = admin.store.releases(&name).await?;
    let staging = admin
        .store
        .release(&name, Environment::Staging)
        .await?
        .map(|r| r.version);
    let production = admin
        .store
        .release(&name, Environment::Production)
        .await?
        .map(|r| r.version);
    Ok(Json(Releases {
        data,
        staging,
        production,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    environment: Environment,
}

#[derive(Serialize)]
struct Served {
    environment: Environment,
    version: u64,
}

async fn promote(admin: Admin, Path(name): Path<String>, body: JsonObject) -> Result<Json<Served>, ApiError> {
    let request: PromoteRequest = body.parse()?;
    let version = admin.store.promote(&name, request.environment).await?;
    Ok(Json(Served {
        environment: request.environment,
        version,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    environment: Environment,
    version: u64,
}

async fn rollback(admin: Admin, Path(name): Path<String>, body: JsonObject) -> Result<Json<Served>, ApiError> {
    let request: RollbackRequest = body.parse()?;
    admin
        .store
        .rollback(&name, request.environment, request.version)
        .await?;
    Ok(Json(Served {
        environment: request.environment,
        version: request.version,
    }))
}

/// A user as the API shows it: never the password hash.
#[derive(Serialize)]
struct UserView {
    id: String,
    account_id: String,
    email: String,
    display_name: String,
    role: UserRole,
    state: UserState,
    sso: Option<SsoIdentity>,
    has_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(user: User) -> UserView {
        UserView {
            has_password: user.password_hash.is_some(),
            id: user.id,
            account_id: user.account_id,
            email: user.email,
            display_name: user.display_name,
            role: user.role,
            state: user.state,
            sso: user.sso,
            created_at: user.created_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    account_id: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_users(
    admin: Admin,
    QueryParams(query): QueryParams<UserQuery>,
) -> Result<Json<ListPage<UserView>>, ApiError> {
    let page = Page {
        after: query.after,
        limit: limit_or(query.limit, DEFAULT_LIMIT)?,
    };
    let paged = admin.store.list_users(query.account_id.as_deref(), &page).await?;
    Ok(Json(ListPage {
        data: paged.items.into_iter().map(UserView::from).collect(),
        next: paged.next,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserRequest {
    account_id: String,
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: UserRole,
    #[serde(default)]
    state: UserState,
}

async fn create_user(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let request: NewUserRequest = body.parse()?;
    let user = admin
        .store
        .create_user(NewUser {
            account_id: request.account_id,
            email: request.email,
            display_name: request.display_name,
            role: request.role,
            state: request.state,
            sso: None,
            password_hash: None,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(user))).into_response())
}

async fn get_user(admin: Admin, Path(id): Path<String>) -> Result<Json<UserView>, ApiError> {
    let user = admin.store.get_user(&id).await?;
    Ok(Json(user.ok_or_else(|| ApiError::not_found("user", &id))?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    display_name: Option<String>,
    role: Option<UserRole>,
    state: Option<UserState>,
}

async fn update_user(admin: Admin, Path(id): Path<String>, body: JsonObject) -> Result<Json<UserView>, ApiError> {
    let patch: UserPatch = body.parse()?;
    let update = UserUpdate {
        display_name: patch.display_name,
        role: patch.role,
        state: patch.state,
        password_hash: None,
    };
    Ok(Json(admin.store.update_user(&id, update).await?.into()))
}

async fn delete_user(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    entity: Option<String>,
    entity_id: Option<String>,
    actor_id: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

async fn audit(
    admin: Admin,
    QueryParams(query): QueryParams<AuditParams>,
) -> Result<Json<ListPage<AuditEntry>>, ApiError> {
    let limit = limit_or(query.limit, DEFAULT_LIMIT)?;
    let entries = admin
        .store
        .audit_log(&AuditQuery {
            entity: query.entity,
            entity_id: query.entity_id,
            actor_id: query.actor_id,
            before: query.before,
            limit,
        })
        .await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(ListPage { data: entries, next }))
}

/// An admin token as the API shows it: never its hash.
#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    scope: AdminScope,
    last4: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<AdminToken> for TokenView {
    fn from(token: AdminToken) -> TokenView {
        TokenView {
            id: token.id,
            name: token.name,
            scope: token.scope,
            last4: token.last4,
            created_at: token.created_at,
            secret: None,
        }
    }
}

async fn list_tokens(admin: Admin) -> Result<Json<ListPage<TokenView>>, ApiError> {
    let tokens = admin.store.list_admin_tokens().await?;
    Ok(Json(ListPage {
        data: tokens.into_iter().map(TokenView::from).collect(),
        next: None,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    scope: AdminScope,
}

async fn create_token(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let request: NewToken = body.parse()?;
    let (token, secret) = admin.store.create_admin_token(&request.name, request.scope).await?;
    let mut view = TokenView::from(token);
    view.secret = Some(secret.into_string());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn delete_token(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_admin_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
