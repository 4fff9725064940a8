//! Spend budgets of applications and keys.
//!
//! | route | methods |
//! | --- | --- |
//! | `/accounts/{id}/budgets` | `PUT` `{"budgets": [...]}`: replaces the organization's budgets, over all its applications (`If-Match` the account's version) |
//! | `/applications/{id}/budgets` | `PUT` `{"budgets": [...]}`: replaces the application's budgets (`If-Match` the application's version) |
//! | `/keys/{id}/budgets` | `PUT` `{"budgets": [...]}`: replaces the key's budgets; its rotations keep them and its spend |
//! | `/accounts/{id}/budgets` | `GET`: where the organization's, its applications' and their keys' budgets stand (spent, left, reset); `format=csv` for CSV |
//! | `/budget-alerts` | `GET`: alerts raised, newest first, with their webhook delivery; `account_id` filters |
//! | `/budgets/metrics` | `GET`: every budget as Prometheus gauges (`maas_budget_amount`, `maas_budget_spent`, `maas_budget_remaining`), for a scrape with an admin token |
//!
//! A budget is `{"amount": 25, "period": "day" | "week" | "month" | "total",
//! "mode": "hard" | "soft"}` in the plan's currency. A hard budget refuses
//! requests that could spend past it (429 `insufficient_quota`); a soft one
//! only counts. Spend counted before a budget is set counts against it.

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maas_store::model::{Account, Application, Budget, BudgetMode, Money};
use maas_store::{ApplicationFilter, BudgetAlert, BudgetStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::analytics::wants_csv;
use crate::auth::Admin;
use crate::conditional::{WritePreconditions, precondition, tagged};
use crate::error::{ApiError, ErrorBody};
use crate::json::{JsonObject, QueryParams};
use crate::tenancy::KeyView;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(set_account_budgets, account_budgets))
        .routes(routes!(budget_alerts))
        .routes(routes!(budget_metrics))
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct BudgetStatuses {
    data: Vec<BudgetStatus>,
}

/// Where an organization's budgets stand
#[utoipa::path(get, path = "/accounts/{id}/budgets", tag = "tenants", params(("id" = String, Path, description = "The account's id"), StatusQuery),
    responses((status = OK, description = "The organization's, its applications' and their keys' budgets, with spend now; CSV with `format=csv`", content(
        (BudgetStatuses = "application/json"),
        (String = "text/csv", example = "scope,id,name,period,mode,amount,currency,spent,remaining,percent,resets_at\n"))),
        (status = NOT_FOUND, description = "No such account", body = ErrorBody)))]
async fn account_budgets(
    admin: Admin,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<StatusQuery>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(query.format.as_deref())?;
    let account = admin.store.get_account(&id).await?;
    let account = account.ok_or_else(|| ApiError::not_found("account", &id))?;
    let filter = ApplicationFilter {
        account_id: Some(id),
        ..ApplicationFilter::default()
    };
    let applications = crate::analytics::applications(&admin.store, &filter).await?;
    let data = admin.store.budget_statuses(&account, &applications).await?;
    if !csv {
        return Ok(Json(BudgetStatuses { data }).into_response());
    }
    let mut text = String::from("scope,id,name,period,mode,amount,currency,spent,remaining,percent,resets_at\n");
    for status in &data {
        let resets = status
            .resets_at
            .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let row = [
            status.scope.clone(),
            status.scope_id.clone(),
            csv_field(&status.name),
            status.budget.period.as_str().to_owned(),
            if status.budget.mode == BudgetMode::Hard {
                "hard"
            } else {
                "soft"
            }
            .to_owned(),
            status.budget.amount.to_string(),
            status.currency.clone(),
            status.spent.to_string(),
            status.remaining.to_string(),
            status.percent.to_string(),
            resets,
        ];
        text.push_str(&row.join(","));
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response())
}

/// A CSV field: quoted when it holds a comma, a quote or a line break, and
/// never starting a formula for a spreadsheet.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    /// Only this organization's alerts.
    account_id: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct BudgetAlerts {
    data: Vec<BudgetAlert>,
}

/// Budget alerts raised
#[utoipa::path(get, path = "/budget-alerts", tag = "tenants", params(AlertQuery),
    responses((status = OK, description = "Newest first, with their webhook delivery", body = BudgetAlerts)))]
async fn budget_alerts(
    admin: Admin,
    QueryParams(query): QueryParams<AlertQuery>,
) -> Result<Json<BudgetAlerts>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be from 1 to 1000"));
    }
    let data = admin.store.budget_alerts(query.account_id.as_deref(), limit).await?;
    Ok(Json(BudgetAlerts { data }))
}

/// Every budget as Prometheus gauges
#[utoipa::path(get, path = "/budgets/metrics", tag = "analytics",
    responses((status = OK, description = "Prometheus text format: `maas_budget_amount`, `maas_budget_spent` and `maas_budget_remaining`, in the budget's currency, labelled by scope, id, name, period, mode and currency", content(
        (String = "text/plain", example = "maas_budget_spent{scope=\"application\",id=\"app_1\",name=\"bot\",period=\"day\",mode=\"hard\",currency=\"EUR\"} 1.25\n")))))]
async fn budget_metrics(admin: Admin) -> Result<Response, ApiError> {
    let statuses = admin.store.budget_statuses_of(None).await?;
    let mut text = String::new();
    for (name, help, value) in [
        (
            "maas_budget_amount",
            "The budget's amount per period, in its currency.",
            (|s: &BudgetStatus| s.budget.amount) as fn(&BudgetStatus) -> Money,
        ),
        (
            "maas_budget_spent",
            "Spent in the budget's current period (settled requests).",
            |s| s.spent,
        ),
        (
            "maas_budget_remaining",
            "Left of the budget in its current period.",
            |s| s.remaining,
        ),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for status in &statuses {
            let labels = [
                ("scope", status.scope.as_str()),
                ("id", status.scope_id.as_str()),
                ("name", status.name.as_str()),
                ("period", status.budget.period.as_str()),
                (
                    "mode",
                    if status.budget.mode == BudgetMode::Hard {
                        "hard"
                    } else {
                        "soft"
                    },
                ),
                ("currency", status.currency.as_str()),
            ]
            .iter()
            .map(|(label, v)| {
                format!(
                    "{label}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
                )
            })
            .collect::<Vec<_>>()
            .join(",");
            text.push_str(&format!("{name}{{{labels}}} {}\n", value(status)));
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}
