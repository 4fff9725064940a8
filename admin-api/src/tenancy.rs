//! Accounts, applications and their keys.
//!
//! | route | methods |
//! | --- | --- |
//! | `/accounts` | `GET` (list), `POST` (create) |
//! | `/accounts/{id}` | `GET`, `PATCH` (`name`, `description`), `DELETE` (with its users, applications and keys) |
//! | `/applications` | `GET` (list; `account_id`, `product`, `state` filters), `POST` (create: `pending` when the plan needs approval) |
//! | `/applications/{id}` | `GET`, `PATCH` (`name`, `description`, `plan`), `DELETE` |
//! | `/applications/{id}/approve`, `/suspend`, `/resume` | `POST` |
//! | `/applications/{id}/keys` | `GET` (list: prefix and last 4 only), `POST` (create: the secret is in this answer only) |
//! | `/keys/{id}` | `GET`, `DELETE` |
//! | `/keys/{id}/revoke` | `POST`: refused from now on, kept listed |
//! | `/keys/{id}/rotate` | `POST` `{"grace_seconds": n}`: a new key; the old one works for the grace period, then expires |

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maas_store::model::{Account, ApiKey, Application, ApplicationState};
use maas_store::{ApplicationFilter, ApplicationUpdate, NewAccount, NewApplication, NewKey, Page, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::AdminState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::{JsonObject, QueryParams};
use crate::paging::{ListPage, ListQuery};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/accounts", get(list_accounts).post(create_account))
        .route(
            "/accounts/{id}",
            get(get_account).patch(update_account).delete(delete_account),
        )
        .route("/applications", get(list_applications).post(create_application))
        .route(
            "/applications/{id}",
            get(get_application)
                .patch(update_application)
                .delete(delete_application),
        )
        .route("/applications/{id}/approve", post(approve))
        .route("/applications/{id}/suspend", post(suspend))
        .route("/applications/{id}/resume", post(resume))
        .route("/applications/{id}/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", get(get_key).delete(delete_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/keys/{id}/rotate", post(rotate_key))
}

fn store_page(query: &ListQuery) -> Result<Page, ApiError> {
    Ok(Page {
        after: query.after.clone(),
        limit: query.limit()?,
    })
}

async fn list_accounts(
    admin: Admin,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<ListPage<Account>>, ApiError> {
    let paged = admin.store.list_accounts(&store_page(&query)?).await?;
    Ok(Json(ListPage {
        data: paged.items,
        next: paged.next,
    }))
}

async fn create_account(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let new: NewAccount = body.parse()?;
    let account = admin.store.create_account(new).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

async fn get_account(admin: Admin, Path(id): Path<String>) -> Result<Json<Account>, ApiError> {
    let account = admin.store.get_account(&id).await?;
    Ok(Json(account.ok_or_else(|| ApiError::not_found("account", &id))?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountPatch {
    name: Option<String>,
    description: Option<String>,
}

async fn update_account(admin: Admin, Path(id): Path<String>, body: JsonObject) -> Result<Json<Account>, ApiError> {
    let patch: AccountPatch = body.parse()?;
    Ok(Json(
        admin.store.update_account(&id, patch.name, patch.description).await?,
    ))
}

async fn delete_account(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_account(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationQuery {
    account_id: Option<String>,
    product: Option<String>,
    state: Option<ApplicationState>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_applications(
    admin: Admin,
    QueryParams(query): QueryParams<ApplicationQuery>,
) -> Result<Json<ListPage<Application>>, ApiError> {
    let filter = ApplicationFilter {
        account_id: query.account_id,
        product: query.product,
        state: query.state,
    };
    let page = store_page(&ListQuery {
        limit: query.limit,
        after: query.after,
    })?;
    let paged = admin.store.list_applications(&filter, &page).await?;
    Ok(Json(ListPage {
        data: paged.items,
        next: paged.next,
    }))
}

async fn create_application(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let new: NewApplication = body.parse()?;
    let application = admin.store.create_application(new).await?;
    Ok((StatusCode::CREATED, Json(application)).into_response())
}

async fn get_application(admin: Admin, Path(id): Path<String>) -> Result<Json<Application>, ApiError> {
    let application = admin.store.get_application(&id).await?;
    Ok(Json(
        application.ok_or_else(|| ApiError::not_found("application", &id))?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationPatch {
    name: Option<String>,
    description: Option<String>,
    /// Another published plan of the same product.
    plan: Option<String>,
}

async fn update_application(
    admin: Admin,
    Path(id): Path<String>,
    body: JsonObject,
) -> Result<Json<Application>, ApiError> {
    let patch: ApplicationPatch = body.parse()?;
    let update = ApplicationUpdate {
        name: patch.name,
        description: patch.description,
        plan: patch.plan,
        state: None,
    };
    Ok(Json(admin.store.update_application(&id, update).await?))
}

/// Moves an application from `from` to `to`, refusing other starting states.
async fn transition(
    admin: &Admin,
    id: &str,
    from: &[ApplicationState],
    to: ApplicationState,
) -> Result<Json<Application>, ApiError> {
    let application = admin
        .store
        .get_application(id)
        .await?
        .ok_or_else(|| ApiError::not_found("application", id))?;
    if application.state == to {
        return Ok(Json(application));
    }
    if !from.contains(&application.state) {
        return Err(StoreError::Conflict(format!(
            "application `{id}` is {}; it cannot become {}",
            application.state.as_str(),
            to.as_str()
        ))
        .into());
    }
    let update = ApplicationUpdate {
        state: Some(to),
        ..ApplicationUpdate::default()
    };
    Ok(Json(admin.store.update_application(id, update).await?))
}

async fn approve(admin: Admin, Path(id): Path<String>) -> Result<Json<Application>, ApiError> {
    transition(&admin, &id, &[ApplicationState::Pending], ApplicationState::Live).await
}

async fn suspend(admin: Admin, Path(id): Path<String>) -> Result<Json<Application>, ApiError> {
    transition(
        &admin,
        &id,
        &[ApplicationState::Live, ApplicationState::Pending],
        ApplicationState::Suspended,
    )
    .await
}

async fn resume(admin: Admin, Path(id): Path<String>) -> Result<Json<Application>, ApiError> {
    transition(&admin, &id, &[ApplicationState::Suspended], ApplicationState::Live).await
}

async fn delete_application(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_application(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What may be shown of a key: never its hash.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub application_id: String,
    pub display_prefix: String,
    pub last4: String,
    pub label: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Usable now: neither revoked nor expired.
    pub active: bool,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> KeyView {
        let active = key.is_usable_at(OffsetDateTime::now_utc());
        KeyView {
            id: key.id,
            application_id: key.application_id,
            display_prefix: key.display_prefix,
            last4: key.last4,
            label: key.label,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            active,
        }
    }
}

/// A new key with its secret: the only answer that carries it.
#[derive(Serialize)]
struct IssuedKeyView {
    #[serde(flatten)]
    key: KeyView,
    secret: String,
}

async fn list_keys(admin: Admin, Path(id): Path<String>) -> Result<Json<ListPage<KeyView>>, ApiError> {
    if admin.store.get_application(&id).await?.is_none() {
        return Err(ApiError::not_found("application", &id));
    }
    let keys = admin.store.application_keys(&id).await?;
    Ok(Json(ListPage {
        data: keys.into_iter().map(KeyView::from).collect(),
        next: None,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    #[serde(default)]
    label: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

async fn create_key(admin: Admin, Path(id): Path<String>, body: Option<JsonObject>) -> Result<Response, ApiError> {
    let request: KeyRequest = match body {
        Some(body) => body.parse()?,
        None => KeyRequest::default(),
    };
    let issued = admin
        .store
        .create_key(
            &id,
            NewKey {
                label: request.label,
                expires_at: request.expires_at,
            },
        )
        .await?;
    let view = IssuedKeyView {
        key: issued.key.into(),
        secret: issued.secret.into_string(),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn get_key(admin: Admin, Path(id): Path<String>) -> Result<Json<KeyView>, ApiError> {
    let key = admin.store.get_key(&id).await?;
    Ok(Json(key.ok_or_else(|| ApiError::not_found("key", &id))?.into()))
}

async fn revoke_key(admin: Admin, Path(id): Path<String>) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(admin.store.revoke_key(&id).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old key keeps working (0 to 30 days).
    grace_seconds: i64,
}

async fn rotate_key(admin: Admin, Path(id): Path<String>, body: JsonObject) -> Result<Response, ApiError> {
    let request: RotateRequest = body.parse()?;
    if !(0..=30 * 86_400).contains(&request.grace_seconds) {
        return Err(ApiError::invalid_field(
            "grace_seconds",
            "must be between 0 and 2592000 (30 days)",
        ));
    }
    let issued = admin
        .store
        .rotate_key(&id, time::Duration::seconds(request.grace_seconds))
        .await?;
    let view = IssuedKeyView {
        key: issued.key.into(),
        secret: issued.secret.into_string(),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn delete_key(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
