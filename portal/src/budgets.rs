//! Spend budgets in the portal: where each stands on an application's page
//! (its organization's, its own and its keys'), a banner for the
//! organization's members when spend reached an alert's threshold, and the
//! console's list of alerts with their webhook delivery.

use axum::extract::State;
use axum::response::Response;
use maas_store::model::{Account, Application, BudgetMode};
use maas_store::{BudgetAlert, BudgetStatus, DeliveryState, Store};
use serde_json::{Value, json};

use crate::PortalError;
use crate::PortalState;
use crate::console::AdminUser;

fn period_word(alert_period: maas_store::model::BudgetPeriod) -> &'static str {
    match alert_period {
        maas_store::model::BudgetPeriod::Day => "daily",
        maas_store::model::BudgetPeriod::Week => "weekly",
        maas_store::model::BudgetPeriod::Month => "monthly",
        maas_store::model::BudgetPeriod::Total => "total",
    }
}

fn scope_word(scope: &str) -> &str {
    match scope {
        "organization" => "Organization",
        "application" => "Application",
        "key" => "Key",
        other => other,
    }
}

/// What a member reads of an alert.
pub fn alert_text(alert: &BudgetAlert) -> String {
    format!(
        "{} {} has spent {} % of its {} budget: {} of {} {}.",
        scope_word(&alert.scope),
        alert.name,
        alert.threshold_percent,
        period_word(alert.budget.period),
        alert.spent,
        alert.budget.amount,
        alert.currency
    )
}

/// The banners of an organization's current alerts.
pub async fn banners(store: &Store, account_id: &str) -> Result<Vec<Value>, PortalError> {
    Ok(store
        .current_budget_alerts(account_id)
        .await?
        .iter()
        .map(|alert| json!({"text": alert_text(alert), "spent": alert.threshold_percent >= 100}))
        .collect())
}

/// Rows of the budgets table: an application's, with its organization's.
pub async fn budget_rows(
    store: &Store,
    account: &Account,
    application: &Application,
) -> Result<Vec<Value>, PortalError> {
    let statuses = store
        .budget_statuses(account, std::slice::from_ref(application))
        .await?;
    Ok(statuses.iter().map(status_row).collect())
}

fn status_row(status: &BudgetStatus) -> Value {
    let currency = &status.currency;
    json!({
        "scope": scope_word(&status.scope),
        "name": status.name,
        "period": period_word(status.budget.period),
        "hard": status.budget.mode == BudgetMode::Hard,
        "amount": format!("{} {currency}", status.budget.amount),
        "spent": format!("{} {currency}", status.spent),
        "remaining": format!("{} {currency}", status.remaining),
        "percent": status.percent.min(100),
        "over": status.percent >= 100,
        "resets_at": status.resets_at.map(crate::developer::when),
    })
}

/// The console's alerts: newest first, with their delivery.
pub async fn console_alerts(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
) -> Result<Response, PortalError> {
    let alerts = state.store().budget_alerts(None, 200).await?;
    let rows: Vec<Value> = alerts
        .iter()
        .map(|alert| {
            let delivery = &alert.delivery;
            json!({
                "raised_at": crate::developer::when(alert.raised_at),
                "text": alert_text(alert),
                "account_id": alert.account_id,
                "state": match delivery.state {
                    DeliveryState::NotSent => "not sent (no webhook)",
                    DeliveryState::Pending => "pending",
                    DeliveryState::Delivered => "delivered",
                    DeliveryState::Failed => "failed",
                },
                "failed": delivery.state == DeliveryState::Failed,
                "attempts": delivery.attempts,
                "last_error": delivery.last_error,
                "delivered_at": delivery.delivered_at.map(crate::developer::when),
                "next_attempt_at": delivery.next_attempt_at.filter(|_| delivery.state == DeliveryState::Pending).map(crate::developer::when),
            })
        })
        .collect();
    state.page(
        &visitor,
        "admin_alerts.html",
        json!({"page": "admin", "section": "alerts", "alerts": rows}),
    )
}
