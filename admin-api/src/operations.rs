//! Promotion, users and the audit log.
//!
//! | route | methods |
//! | --- | --- |
//! | `/products/{name}/releases` | `GET`: every released version and what `staging` and `production` serve |
//! | `/products/{name}/promote` | `POST {"environment": "staging"}` releases the draft (a new version when it changed) to staging; `{"environment": "production"}` serves staging's version in production |
//! | `/products/{name}/rollback` | `POST {"environment", "version"}`: serve an earlier release |
//! | `/users` | `GET` (filter `account_id`), `POST` (`account_id`, `email`, `display_name`, `role`, `state`) |
//! | `/users/{id}` | `GET`, `PATCH` (`display_name`, `role`, `team_role`, `state`), `DELETE` |
//! | `/audit` | `GET` (filters `entity`, `entity_id`, `actor_id`; `before` an entry id; newest first) |
//! | `/tokens` | `GET` (name, scope, last 4), `POST {"name", "scope": "read" \| "write"}` (the answer carries the `secret`, the only time it is shown) |
//! | `/tokens/{id}` | `DELETE`: refused from the next request on |
//!
//! Proxies pick promotions and rollbacks up from the change feed, without
//! a restart. Password hashes never appear in answers.

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maas_store::model::{AdminScope, AdminToken, SsoIdentity, TeamRole, User, UserRole, UserState};
use maas_store::{AuditEntry, AuditQuery, Environment, NewUser, Page, ProductRelease, UserUpdate};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::conditional::{WritePreconditions, precondition, shown_as};
use crate::error::ApiError;
use crate::json::{JsonObject, QueryParams};
use crate::paging::{DEFAULT_LIMIT, ListPage, limit_or};

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(releases))
        .routes(routes!(promote))
        .routes(routes!(rollback))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(audit))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
}

#[derive(Serialize, ToSchema)]
struct Releases {
    data: Vec<ProductRelease>,
    /// The version each environment serves, if any.
    staging: Option<u64>,
    production: Option<u64>,
}

/// List a product's releases
#[utoipa::path(get, path = "/products/{name}/releases", tag = "promotion", params(("name" = String, Path, description = "The product's `system_name`")),
    responses((status = OK, description = "Every released version, and what each environment serves", body = Releases)))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    environment: Environment,
}

#[derive(Serialize, ToSchema)]
struct Served {
    environment: Environment,
    version: u64,
}

/// Promote a product
#[utoipa::path(post, path = "/products/{name}/promote", tag = "promotion", params(("name" = String, Path, description = "The product's `system_name`")),
    request_body = PromoteRequest,
    responses((status = OK, description = "The version the environment now serves", body = Served)))]
async fn promote(admin: Admin, Path(name): Path<String>, body: JsonObject) -> Result<Json<Served>, ApiError> {
    let request: PromoteRequest = body.parse()?;
    let version = admin.store.promote(&name, request.environment).await?;
    Ok(Json(Served {
        environment: request.environment,
        version,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    environment: Environment,
    version: u64,
}

/// Roll an environment back
#[utoipa::path(post, path = "/products/{name}/rollback", tag = "promotion", params(("name" = String, Path, description = "The product's `system_name`")),
    request_body = RollbackRequest,
    responses((status = OK, description = "The version the environment now serves", body = Served)))]
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
#[derive(Serialize, ToSchema)]
struct UserView {
    id: String,
    account_id: String,
    email: String,
    display_name: String,
    role: UserRole,
    /// Their part in their organization: owners manage its team.
    team_role: TeamRole,
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
            team_role: user.team_role,
            state: user.state,
            sso: user.sso,
            created_at: user.created_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UserQuery {
    /// Only this account's users.
    account_id: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The id of the last item of the previous page.
    after: Option<String>,
}

/// List users
#[utoipa::path(get, path = "/users", tag = "tenants", params(UserQuery),
    responses((status = OK, description = "One page of users", body = ListPage<UserView>)))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserRequest {
    #[schema(min_length = 1)]
    account_id: String,
    #[schema(format = Email)]
    email: String,
    #[serde(default)]
    #[schema(
        pattern = "^$|^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 200
    )]
    display_name: String,
    #[serde(default)]
    role: UserRole,
    #[serde(default)]
    state: UserState,
}

/// Create a user
#[utoipa::path(post, path = "/users", tag = "tenants", request_body = NewUserRequest,
    responses((status = CREATED, body = UserView)))]
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
            // An admin creating the user vouches for the address.
            email_verified: true,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(user))).into_response())
}

/// Read a user
#[utoipa::path(get, path = "/users/{id}", tag = "tenants", params(("id" = String, Path, description = "The user's id")),
    responses((status = OK, body = UserView, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn get_user(admin: Admin, Path(id): Path<String>) -> Result<Response, ApiError> {
    let user = admin.store.get_user(&id).await?;
    let user = user.ok_or_else(|| ApiError::not_found("user", &id))?;
    Ok(shown_as(StatusCode::OK, &user, &UserView::from(user.clone())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    #[schema(
        pattern = "^$|^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 200
    )]
    display_name: Option<String>,
    role: Option<UserRole>,
    /// An admin's fix, e.g. an organization left without an owner.
    team_role: Option<TeamRole>,
    state: Option<UserState>,
}

/// Change a user
#[utoipa::path(patch, path = "/users/{id}", tag = "tenants", params(("id" = String, Path, description = "The user's id"), WritePreconditions),
    request_body = UserPatch, responses((status = OK, body = UserView, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn update_user(
    admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let patch: UserPatch = body.parse()?;
    let update = UserUpdate {
        display_name: patch.display_name,
        role: patch.role,
        team_role: patch.team_role,
        state: patch.state,
        ..UserUpdate::default()
    };
    let user = admin.store.update_user_if(&id, update, precondition(&headers)?).await?;
    Ok(shown_as(StatusCode::OK, &user, &UserView::from(user.clone())))
}

/// Delete a user
#[utoipa::path(delete, path = "/users/{id}", tag = "tenants", params(("id" = String, Path, description = "The user's id")),
    responses((status = NO_CONTENT, description = "Deleted")))]
async fn delete_user(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// `backend`, `product`, `plan`, `account`, `user`, `application`, `key`, `admin_token`, …
    entity: Option<String>,
    /// The changed object's id or name.
    entity_id: Option<String>,
    /// Who changed it: an admin token's id or name, a user id.
    actor_id: Option<String>,
    /// Entries older than this entry id (the previous page's `next`).
    before: Option<String>,
    /// RFC 3339: entries at or after this time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339: entries before this time.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Entries per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// `value` as an RFC 3339 time, if given.
fn optional_instant(field: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|text| crate::analytics::instant(field, Some(text), OffsetDateTime::now_utc()))
        .transpose()
}

/// Read the audit log
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditParams),
    responses((status = OK, description = "Entries, newest first; secrets are never recorded", body = ListPage<AuditEntry>)))]
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
            since: optional_instant("since", query.since.as_deref())?,
            until: optional_instant("until", query.until.as_deref())?,
            limit,
        })
        .await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(ListPage { data: entries, next }))
}

/// An admin token as the API shows it: never its hash.
#[derive(Serialize, ToSchema)]
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

/// List admin tokens
#[utoipa::path(get, path = "/tokens", tag = "access", 
    responses((status = OK, description = "The admin tokens made through the API (never their secrets)", body = ListPage<TokenView>)))]
async fn list_tokens(admin: Admin) -> Result<Json<ListPage<TokenView>>, ApiError> {
    let tokens = admin.store.list_admin_tokens().await?;
    Ok(Json(ListPage {
        data: tokens.into_iter().map(TokenView::from).collect(),
        next: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[schema(
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 100
    )]
    name: String,
    scope: AdminScope,
}

/// Create an admin token
#[utoipa::path(post, path = "/tokens", tag = "access", request_body = NewToken,
    responses((status = CREATED, description = "The token with its `secret`, shown this once", body = TokenView)))]
async fn create_token(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let request: NewToken = body.parse()?;
    let (token, secret) = admin.store.create_admin_token(&request.name, request.scope).await?;
    let mut view = TokenView::from(token);
    view.secret = Some(secret.into_string());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Delete an admin token
#[utoipa::path(delete, path = "/tokens/{id}", tag = "access", params(("id" = String, Path, description = "The token's id")),
    responses((status = NO_CONTENT, description = "Refused from the next request on")))]
async fn delete_token(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_admin_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
