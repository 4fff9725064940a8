//! Usage analytics from the store's counters (the ones limits use, so the
//! numbers are what the proxies counted).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /analytics/usage` | a series: `scope` (`application`, `product`, `account`) and `id`, `metric` (default `total_tokens`), `granularity` (`minute`, `hour`, `day`, `week`, `month`, `year`; default `hour`), `from`/`to` (RFC 3339; default the last 24 h); `format=csv` for CSV |
//! | `GET /analytics/top` | applications ranked by `metric` in the `period` bucket holding `at` (default now), `limit` (default 10) |
//! | `GET /analytics/cost` | one application's prompt and completion tokens over `from`/`to` priced by its plan (each model of its `model_prices` at its own prices) |

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maas_store::model::{Application, COMPLETION_TOKENS, Money, PROMPT_TOKENS, TOTAL_TOKENS};
use maas_store::period::Period;
use maas_store::{ApplicationFilter, Store, UsagePoint, all_pages};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::json::QueryParams;
use crate::paging::limit_or;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(top))
        .routes(routes!(cost))
}

pub(crate) fn instant(field: &str, value: Option<&str>, default: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| ApiError::invalid_field(field, format!("`{text}` is not an RFC 3339 time: {e}"))),
    }
}

/// `from`..`to`, by default the last 24 hours.
/// `format=`: JSON (the default) or CSV.
pub(crate) fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(ApiError::invalid_field(
            "format",
            format!("`{other}` is not json or csv"),
        )),
    }
}

fn range(from: Option<&str>, to: Option<&str>) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let to = instant("to", to, OffsetDateTime::now_utc())?;
    let from = instant("from", from, to - time::Duration::days(1))?;
    if from >= to {
        return Err(ApiError::invalid_field("from", "must be before `to`"));
    }
    Ok((from, to))
}

/// Every application matching `filter`.
pub(crate) async fn applications(store: &Store, filter: &ApplicationFilter) -> Result<Vec<Application>, ApiError> {
    Ok(all_pages(|page| async move { store.list_applications(filter, &page).await }).await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Scope {
    Application,
    Product,
    Account,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// What `id` names.
    scope: Scope,
    /// The application id, product `system_name` or account id.
    id: String,
    /// `hits`, `prompt_tokens`, `completion_tokens`, `total_tokens` (default) or a product metric.
    metric: Option<String>,
    /// Bucket size (default `hour`).
    granularity: Option<Period>,
    /// RFC 3339 start (default: 24 h before `to`).
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339 end (default: now).
    #[param(format = DateTime)]
    to: Option<String>,
    /// `json` (default) or `csv` (`start,value` lines).
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Series {
    scope: Scope,
    id: String,
    metric: String,
    granularity: Period,
    #[serde(with = "time::serde::rfc3339")]
    from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    to: OffsetDateTime,
    /// One point per bucket from `from` to `to`, zeros included.
    points: Vec<UsagePoint>,
    /// The sum of the points.
    total: u64,
}

/// A usage series
#[utoipa::path(get, path = "/analytics/usage", tag = "analytics", params(UsageQuery),
    responses((status = OK, description = "The series as JSON, or as CSV with `format=csv`", content(
        (Series = "application/json"),
        (String = "text/csv", example = "start,value\n2026-11-26T10:00:00Z,1234\n"))),
        (status = NOT_FOUND, description = "No such application, product or account", body = ErrorBody)))]
async fn usage(admin: Admin, QueryParams(query): QueryParams<UsageQuery>) -> Result<Response, ApiError> {
    let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
    let metric = query.metric.unwrap_or_else(|| TOTAL_TOKENS.to_owned());
    let granularity = query.granularity.unwrap_or(Period::Hour);
    let csv = wants_csv(query.format.as_deref())?;
    let mut filter = ApplicationFilter::default();
    let ids: Vec<String> = match query.scope {
        Scope::Application => match admin.store.get_application(&query.id).await? {
            Some(app) => vec![app.id],
            None => return Err(ApiError::not_found("application", &query.id)),
        },
        Scope::Product | Scope::Account => {
            let exists = if query.scope == Scope::Product {
                filter.product = Some(query.id.clone());
                admin.store.get_product(&query.id).await?.is_some()
            } else {
                filter.account_id = Some(query.id.clone());
                admin.store.get_account(&query.id).await?.is_some()
            };
            if !exists {
                let kind = if query.scope == Scope::Product {
                    "product"
                } else {
                    "account"
                };
                return Err(ApiError::not_found(kind, &query.id));
            }
            applications(&admin.store, &filter)
                .await?
                .into_iter()
                .map(|a| a.id)
                .collect()
        }
    };
    let points = admin
        .store
        .usage_series_total(&ids, &metric, granularity, from, to)
        .await?;
    let total = points.iter().map(|p| p.value).fold(0, u64::saturating_add);
    if csv {
        let mut text = String::from("start,value\n");
        for point in &points {
            let start = point.start.format(&Rfc3339).unwrap_or_default();
            text.push_str(&format!("{start},{}\n", point.value));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(Json(Series {
        scope: query.scope,
        id: query.id,
        metric,
        granularity,
        from,
        to,
        points,
        total,
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TopQuery {
    /// The metric to rank by (default `total_tokens`).
    metric: Option<String>,
    /// The bucket to rank in (default `day`).
    period: Option<Period>,
    /// An RFC 3339 time inside the bucket (default: now).
    #[param(format = DateTime)]
    at: Option<String>,
    /// How many applications, 1 to 500 (default 10).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct Ranked {
    application_id: String,
    name: String,
    account_id: String,
    product: String,
    value: u64,
}

#[derive(Serialize, ToSchema)]
struct TopApplications {
    metric: String,
    period: Period,
    #[serde(with = "time::serde::rfc3339")]
    bucket_start: OffsetDateTime,
    /// Applications with usage in the bucket, most first.
    data: Vec<Ranked>,
}

/// Top applications
#[utoipa::path(get, path = "/analytics/top", tag = "analytics", params(TopQuery),
    responses((status = OK, body = TopApplications)))]
async fn top(admin: Admin, QueryParams(query): QueryParams<TopQuery>) -> Result<Json<TopApplications>, ApiError> {
    let metric = query.metric.unwrap_or_else(|| TOTAL_TOKENS.to_owned());
    let period = query.period.unwrap_or(Period::Day);
    let at = instant("at", query.at.as_deref(), OffsetDateTime::now_utc())?;
    let limit = limit_or(query.limit, 10)?;
    let mut ranked = Vec::new();
    for app in applications(&admin.store, &ApplicationFilter::default()).await? {
        let value = admin.store.usage(&app.id, &metric, period, at).await?;
        if value > 0 {
            ranked.push(Ranked {
                application_id: app.id,
                name: app.name,
                account_id: app.account_id,
                product: app.product,
                value,
            });
        }
    }
    ranked.sort_by(|a, b| {
        b.value
            .cmp(&a.value)
            .then_with(|| a.application_id.cmp(&b.application_id))
    });
    ranked.truncate(limit);
    let start = OffsetDateTime::from_unix_timestamp(period.bucket_start(at.unix_timestamp()))
        .map_err(|e| ApiError::invalid_field("at", e.to_string()))?;
    Ok(Json(TopApplications {
        metric,
        period,
        bucket_start: start,
        data: ranked,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CostQuery {
    application_id: String,
    /// RFC 3339 start (default: 24 h before `to`).
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339 end (default: now).
    #[param(format = DateTime)]
    to: Option<String>,
}

/// Token usage priced by the application's plan.
#[derive(Serialize, ToSchema)]
struct Cost {
    application_id: String,
    plan: String,
    currency: String,
    #[serde(with = "time::serde::rfc3339")]
    from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    to: OffsetDateTime,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Decimal strings, exact to a millionth.
    prompt_cost: String,
    completion_cost: String,
    cost: String,
}

/// `tokens` at `price` per 1,000, rounded half up to a millionth.
pub fn price(tokens: u64, per_1k: Money) -> Money {
    let micros = (u128::from(tokens) * u128::from(per_1k.micros) + 500) / 1000;
    Money::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// Cost of an application
#[utoipa::path(get, path = "/analytics/cost", tag = "analytics", params(CostQuery),
    responses((status = OK, body = Cost),
        (status = NOT_FOUND, description = "No such application", body = ErrorBody)))]
async fn cost(admin: Admin, QueryParams(query): QueryParams<CostQuery>) -> Result<Json<Cost>, ApiError> {
    let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
    let app = admin
        .store
        .get_application(&query.application_id)
        .await?
        .ok_or_else(|| ApiError::not_found("application", &query.application_id))?;
    let plan = admin
        .store
        .get_plan(&app.product, &app.plan)
        .await?
        .ok_or_else(|| ApiError::not_found("plan", &format!("{}/{}", app.product, app.plan)))?;
    let sum_of = |metric: String| {
        let (store, id) = (&admin.store, &app.id);
        async move {
            let series = store.usage_series(id, &metric, Period::Hour, from, to).await?;
            Ok::<u64, ApiError>(series.iter().map(|p| p.value).fold(0, u64::saturating_add))
        }
    };
    let sums = [
        sum_of(PROMPT_TOKENS.to_owned()).await?,
        sum_of(COMPLETION_TOKENS.to_owned()).await?,
    ];
    // Models priced apart are priced from their own tokens (counted by
    // model, hour by hour); the rest at the plan's prices.
    let (mut prompt_micros, mut completion_micros) = (0u64, 0u64);
    let mut left = sums;
    for (model, prices) in &plan.model_prices {
        let by = maas_store::Breakdown::Model(model);
        let tokens = [
            sum_of(by.metric(PROMPT_TOKENS)).await?,
            sum_of(by.metric(COMPLETION_TOKENS)).await?,
        ];
        prompt_micros += price(tokens[0], prices.price_per_1k_prompt_tokens).micros;
        completion_micros += price(tokens[1], prices.price_per_1k_completion_tokens).micros;
        left = [left[0].saturating_sub(tokens[0]), left[1].saturating_sub(tokens[1])];
    }
    let prompt_cost = Money::from_micros(prompt_micros + price(left[0], plan.price_per_1k_prompt_tokens).micros);
    let completion_cost =
        Money::from_micros(completion_micros + price(left[1], plan.price_per_1k_completion_tokens).micros);
    let total = Money::from_micros(prompt_cost.micros.saturating_add(completion_cost.micros));
    Ok(Json(Cost {
        application_id: app.id,
        plan: app.plan,
        currency: plan.currency,
        from,
        to,
        prompt_tokens: sums[0],
        completion_tokens: sums[1],
        prompt_cost: prompt_cost.to_string(),
        completion_cost: completion_cost.to_string(),
        cost: total.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_half_up_to_a_millionth() {
        let per_1k = Money::parse("0.0015").unwrap();
        assert_eq!(price(1_000, per_1k).to_string(), "0.0015");
        assert_eq!(price(1, per_1k).to_string(), "0.000002", "0.0000015 rounds up");
        assert_eq!(price(0, per_1k).to_string(), "0");
        assert_eq!(
            price(u64::MAX, Money::parse("1000").unwrap()).micros,
            u64::MAX,
            "saturates"
        );
    }
}
