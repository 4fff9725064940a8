//! Spend budgets of applications and keys.
//!
//! | route | methods |
//! | --- | --- |
//! | `/accounts/{id}/budgets` | `PUT` `{"budgets": [...]}`: replaces the organization's budgets, over all its applications (`If-Match` the account's version) |
//! | `/applications/{id}/budgets` | `PUT` `{"budgets": [...]}`: replaces the application's budgets (`If-Match` the application's version) |
//! | `/keys/{id}/budgets` | `PUT` `{"budgets": [...]}`: replaces the key's budgets; its rotations keep them and its spend |
//!
//! A budget is `{"amount": 25, "period": "day" | "week" | "month" | "total",
//! "mode": "hard" | "soft"}` in the plan's currency. A hard budget refuses
//! requests that could spend past it (429 `insufficient_quota`); a soft one
//! only counts. Spend counted before a budget is set counts against it.

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maas_store::model::{Account, Application, Budget};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::conditional::{WritePreconditions, precondition, tagged};
use crate::error::ApiError;
use crate::json::JsonObject;
use crate::tenancy::KeyView;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(set_account_budgets))
        .routes(routes!(set_application_budgets))
        .routes(routes!(set_key_budgets))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Budgets {
    /// At most 8, one hard and one soft per period; `[]` removes them all.
    #[schema(max_items = 8)]
    budgets: Vec<Budget>,
}

/// Set an organization's spend budgets
#[utoipa::path(put, path = "/accounts/{id}/budgets", tag = "tenants", params(("id" = String, Path, description = "The account's id"), WritePreconditions),
    request_body = Budgets,
    responses((status = OK, body = Account, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn set_account_budgets(
    admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let request: Budgets = body.parse()?;
    let account = admin
        .store
        .set_account_budgets(&id, request.budgets, precondition(&headers)?)
        .await?;
    Ok(tagged(StatusCode::OK, &account))
}

/// Set an application's spend budgets
#[utoipa::path(put, path = "/applications/{id}/budgets", tag = "tenants", params(("id" = String, Path, description = "The application's id"), WritePreconditions),
    request_body = Budgets,
    responses((status = OK, body = Application, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn set_application_budgets(
    admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let request: Budgets = body.parse()?;
    let application = admin
        .store
        .set_application_budgets(&id, request.budgets, precondition(&headers)?)
        .await?;
    Ok(tagged(StatusCode::OK, &application))
}

/// Set a key's spend budgets
#[utoipa::path(put, path = "/keys/{id}/budgets", tag = "tenants", params(("id" = String, Path, description = "The key's id")),
    request_body = Budgets,
    responses((status = OK, body = KeyView)))]
async fn set_key_budgets(admin: Admin, Path(id): Path<String>, body: JsonObject) -> Result<Json<KeyView>, ApiError> {
    let request: Budgets = body.parse()?;
    Ok(Json(admin.store.set_key_budgets(&id, request.budgets).await?.into()))
}
