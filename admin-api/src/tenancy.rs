//! Accounts, applications and their keys.
//!
//! | route | methods |
//! | --- | --- |
//! | `/accounts` | `GET` (list), `POST` (create) |
//! | `/accounts/{id}` | `GET`, `PATCH` (`name`, `description`), `DELETE` (with its users, applications and keys) |
//! | `/applications` | `GET` (list; `account_id`, `product`, `state` filters), `POST` (create: `pending` when the plan needs approval) |
//! | `/applications/{id}` | `GET`, `PATCH` (`name`, `description`, `plan`: an admin's plan change is at once), `DELETE` |
//! | `/applications/{id}/approve`, `/suspend`, `/resume`, `/decline` | `POST`: the store's [`ApplicationAction`]s; repeating one is a no-op; unconditional unless `If-Match` names the version reviewed |
//! | `/applications/{id}/keys` | `GET` (list: prefix and last 4 only), `POST` (create: the secret is in this answer only) |
//! | `/keys/{id}` | `GET`, `DELETE` |
//! | `/keys/{id}/revoke` | `POST`: refused from now on, kept listed |
//! | `/keys/{id}/rotate` | `POST` `{"grace_seconds": n}`: a new key; the old one works for the grace period, then expires |
//!
//! Budgets of applications and keys: [`crate::budgets`].

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maas_store::model::{Account, ApiKey, Application, ApplicationState, Budget};
use maas_store::{
    ApplicationAction, ApplicationFilter, ApplicationUpdate, NewAccount, NewApplication, NewKey, Page, PlanChangeBy,
    Precondition,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::conditional::{WritePreconditions, precondition, tagged};
use crate::error::ApiError;
use crate::json::{JsonObject, QueryParams};
use crate::paging::{ListPage, ListQuery};

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account, delete_account))
        .routes(routes!(list_applications, create_application))
        .routes(routes!(get_application, update_application, delete_application))
        .routes(routes!(approve))
        .routes(routes!(suspend))
        .routes(routes!(resume))
        .routes(routes!(decline))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, delete_key))
        .routes(routes!(revoke_key))
        .routes(routes!(rotate_key))
}

fn store_page(query: &ListQuery) -> Result<Page, ApiError> {
    Ok(Page {
        after: query.after.clone(),
        limit: query.limit()?,
    })
}

/// List accounts
#[utoipa::path(get, path = "/accounts", tag = "tenants", params(ListQuery),
    responses((status = OK, description = "One page of accounts", body = ListPage<Account>)))]
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

/// Create an account
#[utoipa::path(post, path = "/accounts", tag = "tenants", request_body = NewAccount,
    responses((status = CREATED, body = Account)))]
async fn create_account(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let new: NewAccount = body.parse()?;
    let account = admin.store.create_account(new).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

/// Read an account
#[utoipa::path(get, path = "/accounts/{id}", tag = "tenants", params(("id" = String, Path, description = "The account's id")),
    responses((status = OK, body = Account, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn get_account(admin: Admin, Path(id): Path<String>) -> Result<Response, ApiError> {
    let account = admin.store.get_account(&id).await?;
    Ok(tagged(
        StatusCode::OK,
        &account.ok_or_else(|| ApiError::not_found("account", &id))?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountPatch {
    #[schema(
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 200
    )]
    name: Option<String>,
    description: Option<String>,
}

/// Rename or describe an account
#[utoipa::path(patch, path = "/accounts/{id}", tag = "tenants", params(("id" = String, Path, description = "The account's id"), WritePreconditions),
    request_body = AccountPatch, responses((status = OK, body = Account, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn update_account(
    admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let patch: AccountPatch = body.parse()?;
    let account = admin
        .store
        .update_account_if(&id, patch.name, patch.description, precondition(&headers)?)
        .await?;
    Ok(tagged(StatusCode::OK, &account))
}

/// Delete an account
#[utoipa::path(delete, path = "/accounts/{id}", tag = "tenants", params(("id" = String, Path, description = "The account's id")),
    responses((status = NO_CONTENT, description = "Deleted with its users, applications and keys")))]
async fn delete_account(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_account(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ApplicationQuery {
    /// Only this account's applications.
    account_id: Option<String>,
    /// Only applications of this product.
    product: Option<String>,
    /// Only applications in this state.
    state: Option<ApplicationState>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The id of the last item of the previous page.
    after: Option<String>,
}

/// List applications
#[utoipa::path(get, path = "/applications", tag = "tenants", params(ApplicationQuery),
    responses((status = OK, description = "One page of applications", body = ListPage<Application>)))]
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

/// Create an application for an account
#[utoipa::path(post, path = "/applications", tag = "tenants", request_body = NewApplication,
    responses((status = CREATED, description = "`pending` when the plan needs approval, else `live`", body = Application)))]
async fn create_application(admin: Admin, body: JsonObject) -> Result<Response, ApiError> {
    let new: NewApplication = body.parse()?;
    let application = admin.store.create_application(new).await?;
    Ok((StatusCode::CREATED, Json(application)).into_response())
}

/// Read an application
#[utoipa::path(get, path = "/applications/{id}", tag = "tenants", params(("id" = String, Path, description = "The application's id")),
    responses((status = OK, body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn get_application(admin: Admin, Path(id): Path<String>) -> Result<Response, ApiError> {
    let application = admin.store.get_application(&id).await?;
    Ok(tagged(
        StatusCode::OK,
        &application.ok_or_else(|| ApiError::not_found("application", &id))?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplicationPatch {
    #[schema(
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 200
    )]
    name: Option<String>,
    description: Option<String>,
    /// Another published plan of the same product.
    plan: Option<String>,
}

/// Rename an application or change its plan
#[utoipa::path(patch, path = "/applications/{id}", tag = "tenants", params(("id" = String, Path, description = "The application's id"), WritePreconditions),
    request_body = ApplicationPatch, responses((status = OK, body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn update_application(
    admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let patch: ApplicationPatch = body.parse()?;
    let mut precondition = precondition(&headers)?;
    let mut application = None;
    if patch.name.is_some() || patch.description.is_some() {
        let update = ApplicationUpdate {
            name: patch.name,
            description: patch.description,
        };
        let updated = admin.store.update_application_if(&id, update, precondition).await?;
        application = Some(updated);
        // The version asked for was checked; the plan change follows it.
        precondition = Precondition::Any;
    }
    if let Some(plan) = patch.plan {
        let changed = admin
            .store
            .change_plan(&id, &plan, PlanChangeBy::Admin, precondition)
            .await?;
        application = Some(changed);
    }
    let application = match application {
        Some(application) => application,
        None => {
            let current = admin.store.get_application(&id).await?;
            let current = current.ok_or_else(|| ApiError::not_found("application", &id))?;
            maas_store::check_precondition("application", &id, Some(&current), precondition)?;
            current
        }
    };
    Ok(tagged(StatusCode::OK, &application))
}

async fn act(admin: &Admin, id: &str, headers: &HeaderMap, action: ApplicationAction) -> Result<Response, ApiError> {
    let application = admin
        .store
        .act_on_application(id, action, precondition(headers)?)
        .await?;
    Ok(tagged(StatusCode::OK, &application))
}

/// Approve a pending application, or the plan its owner asked for
#[utoipa::path(post, path = "/applications/{id}/approve", tag = "tenants", params(("id" = String, Path, description = "The application's id"), WritePreconditions),
    responses((status = OK, description = "`pending` → `live`; a live application with a `requested_plan` moves to it. Without `If-Match` it approves the plan requested *now*: send the `ETag` of the version you reviewed, so a request changed since fails with 409 `stale_version`", body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn approve(admin: Admin, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    act(&admin, &id, &headers, ApplicationAction::Approve).await
}

/// Suspend an application
#[utoipa::path(post, path = "/applications/{id}/suspend", tag = "tenants", params(("id" = String, Path, description = "The application's id"), WritePreconditions),
    responses((status = OK, description = "`live` or `pending` → `suspended`: its keys are refused", body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn suspend(admin: Admin, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    act(&admin, &id, &headers, ApplicationAction::Suspend).await
}

/// Resume a suspended application
#[utoipa::path(post, path = "/applications/{id}/resume", tag = "tenants", params(("id" = String, Path, description = "The application's id"), WritePreconditions),
    responses((status = OK, description = "`suspended` → `live`", body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn resume(admin: Admin, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    act(&admin, &id, &headers, ApplicationAction::Resume).await
}

/// Decline the plan an application's owner asked for
#[utoipa::path(post, path = "/applications/{id}/decline", tag = "tenants", params(("id" = String, Path, description = "The application's id"), WritePreconditions),
    responses((status = OK, description = "The `requested_plan` is dropped; the plan stays", body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn decline(admin: Admin, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    act(&admin, &id, &headers, ApplicationAction::Decline).await
}

/// Delete an application
#[utoipa::path(delete, path = "/applications/{id}", tag = "tenants", params(("id" = String, Path, description = "The application's id")),
    responses((status = NO_CONTENT, description = "Deleted with its keys")))]
async fn delete_application(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_application(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What may be shown of a key: never its hash.
#[derive(Debug, Serialize, ToSchema)]
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
    /// What it may spend (`PUT /keys/{id}/budgets`).
    pub budgets: Vec<Budget>,
    /// The first key of its rotation chain, whose spend it shares.
    pub spend_lineage: String,
    /// When a proxy last saw it used, to the minute (`null`: never, or
    /// not in this answer: key creation and changes leave it out).
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> KeyView {
        let active = key.is_usable_at(OffsetDateTime::now_utc());
        let spend_lineage = key.spend_lineage().to_owned();
        KeyView {
            budgets: key.budgets,
            spend_lineage,
            id: key.id,
            application_id: key.application_id,
            display_prefix: key.display_prefix,
            last4: key.last4,
            label: key.label,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            active,
            last_used_at: None,
        }
    }
}

/// A new key with its secret: the only answer that carries it.
#[derive(Serialize, ToSchema)]
struct IssuedKeyView {
    #[serde(flatten)]
    key: KeyView,
    /// The key itself: shown in this answer only, stored as a hash.
    secret: String,
}

/// List an application's keys
#[utoipa::path(get, path = "/applications/{id}/keys", tag = "tenants", params(("id" = String, Path, description = "The application's id")),
    responses((status = OK, description = "Every key of the application (prefix and last 4 only)", body = ListPage<KeyView>)))]
async fn list_keys(admin: Admin, Path(id): Path<String>) -> Result<Json<ListPage<KeyView>>, ApiError> {
    if admin.store.get_application(&id).await?.is_none() {
        return Err(ApiError::not_found("application", &id));
    }
    let keys = admin.store.application_keys(&id).await?;
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let last_used = admin.store.keys_last_used(&ids).await?;
    Ok(Json(ListPage {
        data: keys
            .into_iter()
            .zip(last_used)
            .map(|(key, last_used_at)| KeyView {
                last_used_at,
                ..KeyView::from(key)
            })
            .collect(),
        next: None,
    }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    #[serde(default)]
    label: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// Create a key
#[utoipa::path(post, path = "/applications/{id}/keys", tag = "tenants", params(("id" = String, Path, description = "The application's id")),
    request_body(content = Option<KeyRequest>, description = "Optional: a label and an expiry"),
    responses((status = CREATED, description = "The new key with its secret, shown this once", body = IssuedKeyView)))]
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

/// Read a key
#[utoipa::path(get, path = "/keys/{id}", tag = "tenants", params(("id" = String, Path, description = "The key's id")),
    responses((status = OK, body = KeyView)))]
async fn get_key(admin: Admin, Path(id): Path<String>) -> Result<Json<KeyView>, ApiError> {
    let key = admin.store.get_key(&id).await?;
    let key = key.ok_or_else(|| ApiError::not_found("key", &id))?;
    let last_used_at = admin
        .store
        .keys_last_used(std::slice::from_ref(&id))
        .await?
        .pop()
        .flatten();
    Ok(Json(KeyView {
        last_used_at,
        ..KeyView::from(key)
    }))
}

/// Revoke a key
#[utoipa::path(post, path = "/keys/{id}/revoke", tag = "tenants", params(("id" = String, Path, description = "The key's id")),
    responses((status = OK, description = "Refused from now on, kept listed", body = KeyView)))]
async fn revoke_key(admin: Admin, Path(id): Path<String>) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(admin.store.revoke_key(&id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old key keeps working (0 to 30 days).
    #[schema(minimum = 0, maximum = 2_592_000)]
    grace_seconds: i64,
}

/// Rotate a key
#[utoipa::path(post, path = "/keys/{id}/rotate", tag = "tenants", params(("id" = String, Path, description = "The key's id")),
    request_body = RotateRequest,
    responses((status = CREATED, description = "The new key with its secret; the old one expires after the grace period", body = IssuedKeyView)))]
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

/// Delete a key
#[utoipa::path(delete, path = "/keys/{id}", tag = "tenants", params(("id" = String, Path, description = "The key's id")),
    responses((status = NO_CONTENT, description = "Deleted")))]
async fn delete_key(admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    admin.store.delete_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
