//! An application's traffic, as the walkthrough's statistics screen shows
//! it: a period (24 hours, 7 days, 30 days, 12 months), a metric (hits,
//! tokens, cost in the plan's currency) broken down by method (hits) or
//! prompt and completion (tokens, cost), by model or by key; a stacked bar
//! chart, a table and a CSV download. The chart is an SVG drawn here, so
//! the page needs no script.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maas_store::model::{COMPLETION_TOKENS, HITS, Money, PROMPT_TOKENS, Plan};
use maas_store::period::Period;
use serde::Deserialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::PortalState;
use crate::developer::own_application;
use crate::render::PortalError;
use crate::session::Developer;

mod breakdown;
use breakdown::{Measure, Reader, breakdown_parts};

/// The periods offered, as the walkthrough offers them.
const PERIODS: [(&str, &str, Period, i64); 4] = [
    ("24h", "24 hours", Period::Hour, 1),
    ("7d", "7 days", Period::Day, 7),
    ("30d", "30 days", Period::Day, 30),
    ("12m", "12 months", Period::Month, 365),
];

const METRICS: [(&str, &str); 3] = [("hits", "Hits"), ("tokens", "Tokens"), ("cost", "Cost")];

/// What a metric is broken down by; the first is the metric's own split
/// (hits by method, tokens and cost by prompt and completion).
const BREAKDOWNS: [(&str, &str); 3] = [("kind", "by method or kind"), ("model", "by model"), ("key", "by key")];

const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

#[derive(Deserialize)]
pub struct StatisticsQuery {
    period: Option<String>,
    metric: Option<String>,
    by: Option<String>,
}

/// One stacked series: a name and a value per bucket.
pub(super) struct Series {
    name: String,
    values: Vec<u64>,
}

/// What the page and the CSV show.
struct Traffic {
    starts: Vec<OffsetDateTime>,
    series: Vec<Series>,
    /// Values are micro-units of `currency` (cost), else counts.
    currency: Option<String>,
    granularity: Period,
    from: OffsetDateTime,
    to: OffsetDateTime,
}

impl Traffic {
    /// `value` as a number: a count, or an exact decimal amount.
    fn amount(&self, value: u64) -> String {
        match self.currency {
            Some(_) => Money::from_micros(value).to_string(),
            None => value.to_string(),
        }
    }

    /// `value` for people: with the currency when it is money.
    fn format(&self, value: u64) -> String {
        match &self.currency {
            Some(currency) => format!("{currency} {}", self.amount(value)),
            None => self.amount(value),
        }
    }
}

/// `given` if it is one of `keys`, else the first key when absent.
fn choice(given: Option<&str>, keys: impl IntoIterator<Item = &'static str>) -> Result<&'static str, PortalError> {
    let mut keys = keys.into_iter().peekable();
    let first = *keys.peek().expect("choices");
    let Some(given) = given else {
        return Ok(first);
    };
    keys.find(|key| *key == given)
        .ok_or_else(|| PortalError::bad_request(format!("`{given}` is not one of the choices.")))
}

/// The period, metric and breakdown a query chose.
struct Chosen {
    period: &'static str,
    metric: &'static str,
    by: &'static str,
}

/// The application, its traffic for the query, and what was chosen.
async fn load(
    state: &PortalState,
    developer: &Developer,
    id: &str,
    query: &StatisticsQuery,
) -> Result<(maas_store::model::Application, Traffic, Chosen), PortalError> {
    let app = own_application(state, developer.session(), id).await?;
    let chosen = Chosen {
        period: choice(query.period.as_deref(), PERIODS.iter().map(|p| p.0))?,
        metric: choice(query.metric.as_deref(), METRICS.iter().map(|m| m.0))?,
        by: choice(query.by.as_deref(), BREAKDOWNS.iter().map(|b| b.0))?,
    };
    let plan = state.store().get_plan(&app.product, &app.plan).await?;
    let mut traffic = traffic(
        state,
        &app.id,
        &app.product,
        plan.as_ref(),
        chosen.period,
        chosen.metric,
    )
    .await?;
    if chosen.by != "kind" {
        let reader = Reader {
            store: state.store(),
            application_id: &app.id,
            granularity: traffic.granularity,
            from: traffic.from,
            to: traffic.to,
        };
        let measure = match chosen.metric {
            "hits" => Measure::Hits,
            "tokens" => Measure::Tokens,
            _ => Measure::Cost(
                plan.as_ref()
                    .ok_or_else(|| PortalError::not_found("The application's plan no longer exists."))?,
            ),
        };
        let parts = breakdown_parts(state, &app, chosen.by).await?;
        traffic.series = reader.broken_down(&measure, &parts).await?;
    }
    Ok((app, traffic, chosen))
}

/// The periods offered, `current` marking the one shown.
fn period_choices(current: &str) -> Vec<serde_json::Value> {
    PERIODS
        .iter()
        .map(|(key, label, ..)| json!({"key": key, "label": label, "current": *key == current}))
        .collect()
}

/// The metrics offered, `current` marking the one shown.
fn metric_choices(current: &str) -> Vec<serde_json::Value> {
    METRICS
        .iter()
        .map(|(key, label)| json!({"key": key, "label": label, "current": *key == current}))
        .collect()
}

/// An application's traffic chart for the console, as the statistics
/// page draws it (the period and metric chosen, 7 days of tokens by
/// default), with the choices to link.
pub(crate) async fn console_view(
    state: &PortalState,
    app: &maas_store::model::Application,
    period: Option<&str>,
    metric: Option<&str>,
) -> Result<serde_json::Value, PortalError> {
    let period = choice(Some(period.unwrap_or("7d")), PERIODS.iter().map(|p| p.0))?;
    let metric = choice(Some(metric.unwrap_or("tokens")), METRICS.iter().map(|m| m.0))?;
    let plan = state.store().get_plan(&app.product, &app.plan).await?;
    let traffic = traffic(state, &app.id, &app.product, plan.as_ref(), period, metric).await?;
    let total: u64 = traffic.series.iter().flat_map(|s| &s.values).sum();
    Ok(json!({
        "chart": chart(&traffic), "total": traffic.format(total), "period": period, "metric": metric,
        "periods": period_choices(period), "metrics": metric_choices(metric),
    }))
}

/// `tokens` per bucket at `per_1k`, in micro-units.
/// Spend counted in nanos, as micro-units (rounded up, as costs are shown).
pub(super) fn spent_micros(nanos: Vec<u64>) -> Vec<u64> {
    nanos.into_iter().map(|n| n.div_ceil(1_000)).collect()
}

pub(super) fn priced(tokens: Vec<u64>, per_1k: Money) -> Vec<u64> {
    tokens
        .into_iter()
        .map(|t| maas_admin_api::analytics::price(t, per_1k).micros)
        .collect()
}

async fn traffic(
    state: &PortalState,
    application_id: &str,
    product: &str,
    plan: Option<&Plan>,
    period: &str,
    metric: &str,
) -> Result<Traffic, PortalError> {
    let (_, _, granularity, days) = PERIODS
        .iter()
        .find(|(key, ..)| *key == period)
        .copied()
        .ok_or_else(|| PortalError::bad_request("Unknown period."))?;
    let to = OffsetDateTime::now_utc();
    let from = to - Duration::days(days) + Duration::seconds(1);
    let store = state.store();
    let series_of =
        |metric: String| async move { store.usage_series(application_id, &metric, granularity, from, to).await };
    let hits = series_of(HITS.to_owned()).await?;
    let starts: Vec<OffsetDateTime> = hits.iter().map(|p| p.start).collect();
    let values = |points: Vec<maas_store::UsagePoint>| points.into_iter().map(|p| p.value).collect::<Vec<_>>();
    let mut series = Vec::new();
    let mut currency = None;
    match metric {
        "hits" => {
            // The methods production serves, else the draft's.
            let served = store.release(product, maas_store::Environment::Production).await?;
            let methods = match served {
                Some(release) => release.config.effective_methods(),
                None => store
                    .get_product(product)
                    .await?
                    .map(|p| p.effective_methods())
                    .unwrap_or_default(),
            };
            let mut counted = vec![0u64; starts.len()];
            for method in methods {
                let points = values(series_of(method.system_name.clone()).await?);
                if points.iter().all(|v| *v == 0) {
                    continue;
                }
                for (sum, v) in counted.iter_mut().zip(&points) {
                    *sum += v;
                }
                let name = if method.friendly_name.is_empty() {
                    method.system_name
                } else {
                    method.friendly_name
                };
                series.push(Series { name, values: points });
            }
            let other: Vec<u64> = hits
                .iter()
                .zip(&counted)
                .map(|(h, c)| h.value.saturating_sub(*c))
                .collect();
            if other.iter().any(|v| *v > 0) || series.is_empty() {
                let name = if series.is_empty() { "Hits" } else { "Other" };
                series.push(Series {
                    name: name.into(),
                    values: other,
                });
            }
        }
        "tokens" | "cost" => {
            let prompt = values(series_of(PROMPT_TOKENS.to_owned()).await?);
            let completion = values(series_of(COMPLETION_TOKENS.to_owned()).await?);
            if metric == "tokens" {
                series.push(Series {
                    name: "Prompt tokens".into(),
                    values: prompt,
                });
                series.push(Series {
                    name: "Completion tokens".into(),
                    values: completion,
                });
            } else if let Some(plan) = plan.filter(|p| !p.model_prices.is_empty()) {
                // Models priced apart: the spend counted at each request's prices.
                let spend = values(series_of(maas_store::model::SPEND.to_owned()).await?);
                series.push(Series {
                    name: "Cost".into(),
                    values: spent_micros(spend),
                });
                currency = Some(plan.currency.clone());
            } else {
                let plan = plan.ok_or_else(|| PortalError::not_found("The application's plan no longer exists."))?;
                series.push(Series {
                    name: "Prompt tokens".into(),
                    values: priced(prompt, plan.price_per_1k_prompt_tokens),
                });
                series.push(Series {
                    name: "Completion tokens".into(),
                    values: priced(completion, plan.price_per_1k_completion_tokens),
                });
                currency = Some(plan.currency.clone());
            }
        }
        _ => return Err(PortalError::bad_request("Unknown metric.")),
    }
    Ok(Traffic {
        starts,
        series,
        currency,
        granularity,
        from,
        to,
    })
}

fn label(at: OffsetDateTime, granularity: Period) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(at.month())) - 1];
    match granularity {
        Period::Hour => format!("{} {month} {:02}:00", at.day(), at.hour()),
        Period::Month => format!("{month} {}", at.year()),
        _ => format!("{} {month}", at.day()),
    }
}

/// A stacked bar chart of `traffic` as SVG (escaped text only).
fn chart(traffic: &Traffic) -> String {
    let (width, height, left, bottom, top) = (900.0_f64, 280.0_f64, 60.0_f64, 40.0_f64, 10.0_f64);
    let buckets = traffic.starts.len().max(1);
    let totals: Vec<u64> = (0..traffic.starts.len())
        .map(|i| {
            traffic
                .series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = nice_max(totals.iter().copied().max().unwrap_or(0));
    // Room on the right for the last label, centred under its bar.
    let plot_w = width - left - 40.0;
    let plot_h = height - bottom - top;
    let slot = plot_w / buckets as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="Traffic per {}" xmlns="http://www.w3.org/2000/svg">"#,
        traffic.granularity.as_str()
    );
    for tick in 0..=4 {
        let value = max * tick / 4;
        let y = top + plot_h - plot_h * tick as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#dfe3eb"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#5b6478">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            escape(&short(traffic, value))
        );
    }
    let every = buckets.div_ceil(8);
    for (i, start) in traffic.starts.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = top + plot_h;
        for (s, series) in traffic.series.iter().enumerate() {
            let value = series.values.get(i).copied().unwrap_or(0);
            if value == 0 || max == 0 {
                continue;
            }
            let h = plot_h * value as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{}"><title>{}: {} ({})</title></rect>"#,
                COLORS[s % COLORS.len()],
                escape(&series.name),
                escape(&traffic.format(value)),
                escape(&label(*start, traffic.granularity))
            );
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#5b6478">{}</text>"##,
                x + bar / 2.0,
                height - bottom + 16.0,
                escape(&label(*start, traffic.granularity))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A round number at or above `value` for the chart's top.
fn nice_max(value: u64) -> u64 {
    if value <= 4 {
        return 4;
    }
    let magnitude = 10u64.pow(value.ilog10());
    [1, 2, 4, 5, 10]
        .iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10 * magnitude)
}

/// An axis label: counts shortened (`12k`, `3.4M`), amounts exact.
fn short(traffic: &Traffic, value: u64) -> String {
    match traffic.currency {
        None if value >= 1_000_000 => format!("{:.1}M", value as f64 / 1e6),
        None if value >= 10_000 => format!("{}k", value / 1000),
        _ => traffic.amount(value),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub async fn page(
    State(state): State<PortalState>,
    developer: Developer,
    Path(id): Path<String>,
    Query(query): Query<StatisticsQuery>,
) -> Result<Response, PortalError> {
    let (app, traffic, chosen) = load(&state, &developer, &id, &query).await?;
    let Chosen { period, metric, by } = chosen;
    let rows: Vec<_> = traffic
        .series
        .iter()
        .enumerate()
        .map(
            |(i, s)| json!({"name": s.name, "color": i % COLORS.len(), "total": traffic.format(s.values.iter().sum())}),
        )
        .collect();
    let total: u64 = traffic.series.iter().flat_map(|s| &s.values).sum();
    let context = json!({
        "page": "applications",
        "app": {"id": app.id, "name": app.name},
        "periods": period_choices(period), "metrics": metric_choices(metric),
        "breakdowns": BREAKDOWNS.iter().map(|(k, l)| {
            let label = match (*k, metric) {
                ("kind", "hits") => "by method",
                ("kind", _) => "prompt and completion",
                ("key", _) if app.token_client.is_some() => "by person",
                _ => l,
            };
            json!({"key": k, "label": label, "current": *k == by})
        }).collect::<Vec<_>>(),
        "period": period, "metric": metric, "by": by, "currency": traffic.currency,
        "chart": chart(&traffic),
        "rows": rows, "total": traffic.format(total),
        "from": crate::developer::when(traffic.from), "to": crate::developer::when(traffic.to),
        "per": traffic.granularity.as_str(),
    });
    state.page(&developer.0, "statistics.html", context)
}

/// A cell safe to open in a spreadsheet (no formula).
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub async fn csv(
    State(state): State<PortalState>,
    developer: Developer,
    Path(id): Path<String>,
    Query(query): Query<StatisticsQuery>,
) -> Result<Response, PortalError> {
    let (app, traffic, chosen) = load(&state, &developer, &id, &query).await?;
    let Chosen { period, metric, by } = chosen;
    // Amounts name their currency in the header; cells stay numbers.
    let unit = traffic.currency.as_ref().map(|c| format!(" ({c})")).unwrap_or_default();
    let mut text = String::from("start");
    for series in &traffic.series {
        text.push(',');
        text.push_str(&csv_cell(&format!("{}{unit}", series.name)));
    }
    let _ = writeln!(text, ",{}", csv_cell(&format!("total{unit}")));
    for (i, start) in traffic.starts.iter().enumerate() {
        text.push_str(&rfc3339(*start));
        let mut total = 0;
        for series in &traffic.series {
            let value = series.values.get(i).copied().unwrap_or(0);
            total += value;
            let _ = write!(text, ",{}", traffic.amount(value));
        }
        let _ = writeln!(text, ",{}", traffic.amount(total));
    }
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!("attachment; filename=\"{}-{metric}-{by}-{period}.csv\"", app.id);
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
