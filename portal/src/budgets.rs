//! Spend budgets in the portal: where each stands on an application's page
//! (its organization's, its own and its keys'), a banner for the
//! organization's members when spend reached an alert's threshold, and the
//! console's list of alerts with their webhook delivery.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::Response;
use maas_store::model::{Account, Application, Budget, BudgetAuthor, BudgetMode, BudgetPeriod, Money};
use maas_store::{BudgetAlert, BudgetStatus, DeliveryState, Store};
use serde_json::{Value, json};

use crate::PortalError;
use crate::PortalState;
use crate::console::AdminUser;
use crate::session::Posted;

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
        alert.budget.period.adjective(),
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
        "period": status.budget.period.adjective(),
        "hard": status.budget.mode == BudgetMode::Hard,
        "by_owner": status.budget.set_by == BudgetAuthor::Owner,
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

/// Rows of the budgets form: `period_{i}`, `amount_{i}` (empty: no
/// budget), `mode_{i}` (`hard`, `soft`) and `alerts_{i}` (percentages,
/// comma-separated), for `i` from 0.
pub fn parse_budget_form(fields: &HashMap<String, String>) -> Result<Vec<Budget>, String> {
    let mut budgets = Vec::new();
    for row in 0..MAX_FORM_ROWS {
        let field = |name: &str| {
            fields
                .get(&format!("{name}_{row}"))
                .map(|v| v.trim())
                .unwrap_or_default()
        };
        let amount = field("amount");
        if amount.is_empty() {
            continue;
        }
        let line = row + 1;
        let amount = Money::parse(amount).map_err(|e| format!("Row {line}: the amount {e}."))?;
        let period = match field("period") {
            "day" => BudgetPeriod::Day,
            "week" => BudgetPeriod::Week,
            "month" => BudgetPeriod::Month,
            "total" => BudgetPeriod::Total,
            other => {
                return Err(format!(
                    "Row {line}: `{other}` is not a period (day, week, month or total)."
                ));
            }
        };
        let mode = match field("mode") {
            "" | "hard" => BudgetMode::Hard,
            "soft" => BudgetMode::Soft,
            other => return Err(format!("Row {line}: `{other}` is neither hard nor soft.")),
        };
        let alert_at_percent = field("alerts")
            .split([',', ' ', '%'])
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u8>()
                    .map_err(|_| format!("Row {line}: `{p}` is not a percentage from 1 to 100."))
            })
            .collect::<Result<Vec<u8>, String>>()?;
        budgets.push(Budget {
            amount,
            period,
            mode,
            alert_at_percent,
            set_by: BudgetAuthor::Admin,
        });
    }
    Ok(budgets)
}

/// Rows a budgets form offers: those given, then empty ones to add.
const MAX_FORM_ROWS: usize = 10;

/// The form's rows for `budgets`, plus two empty ones.
pub fn form_rows(budgets: &[&Budget]) -> Vec<Value> {
    budgets
        .iter()
        .map(|b| {
            json!({"period": b.period.as_str(), "amount": b.amount.to_string(),
                "mode": if b.mode == BudgetMode::Hard { "hard" } else { "soft" },
                "alerts": b.alert_at_percent.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")})
        })
        .chain((0..2).map(|_| json!({"period": "month", "amount": "", "mode": "hard", "alerts": "50, 80, 100"})))
        .take(MAX_FORM_ROWS)
        .collect()
}

/// What a refused budgets form says.
fn refused(error: maas_store::StoreError) -> PortalError {
    match error {
        maas_store::StoreError::Invalid(errors) => PortalError::bad_request(format!(
            "The budgets were not saved: {errors}. Go back and correct them."
        )),
        maas_store::StoreError::PreconditionFailed { .. } => PortalError::new(
            axum::http::StatusCode::CONFLICT,
            "That did not work",
            "The application changed since the page was loaded; reload it and set the budgets again.",
        ),
        other => other.into(),
    }
}

/// A posted budgets form: its rows as budgets, and the version of the
/// object the page showed.
fn read_form(form: &HashMap<String, String>) -> Result<(Vec<Budget>, &str), PortalError> {
    let budgets = parse_budget_form(form).map_err(PortalError::bad_request)?;
    Ok((budgets, form.get("version").map(String::as_str).unwrap_or_default()))
}

/// An admin sets all of an application's budgets (console).
pub async fn console_set_budgets(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    crate::console::require_admin(&visitor)?;
    let (budgets, version) = read_form(&form)?;
    visitor
        .store(&state)
        .set_application_budgets(&id, budgets, maas_store::Precondition::Matches(version))
        .await
        .map_err(refused)?;
    Ok(visitor.redirect(&format!("/admin/applications/{id}")))
}

/// An organization's owner sets the budgets of their own on one of its
/// applications; an admin's stay ([`maas_store::model::budget::with_owner_budgets`]).
pub async fn owner_set_budgets(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let session = crate::developer::signed_in(&visitor)?;
    let app = crate::developer::own_application(&state, session, &id).await?;
    let (budgets, version) = read_form(&form)?;
    visitor
        .store(&state)
        .set_application_budgets_as_owner(
            &session.user.id,
            &app.id,
            budgets,
            maas_store::Precondition::Matches(version),
        )
        .await
        .map_err(refused)?;
    Ok(visitor.redirect(&format!("/applications/{}", app.id)))
}

/// A key's budgets page: where they stand, and the form (all of them for
/// an admin, an owner's own for an owner).
async fn key_budgets_page(
    state: &PortalState,
    visitor: &crate::session::Visitor,
    key: &maas_store::model::ApiKey,
    app: &Application,
    console: bool,
) -> Result<Response, PortalError> {
    let store = state.store();
    let statuses = store.budget_statuses_of(Some(vec![format!("key:{}", key.id)])).await?;
    let editable: Vec<&Budget> = key
        .budgets
        .iter()
        .filter(|b| console || b.set_by == BudgetAuthor::Owner)
        .collect();
    let (action, back) = if console {
        (
            format!("/admin/keys/{}/budgets", key.id),
            format!("/admin/applications/{}", app.id),
        )
    } else {
        (format!("/keys/{}/budgets", key.id), format!("/applications/{}", app.id))
    };
    let can_edit = console
        || visitor
            .signed_in
            .as_ref()
            .is_some_and(|s| maas_store::is_owner(&s.user));
    let context = json!({
        "can_edit": can_edit,
        "page": if console { "admin" } else { "applications" },
        "section": "applications",
        "console": console,
        "key": {"id": key.id, "masked": key.masked(), "label": key.label},
        "app": {"id": app.id, "name": app.name},
        "budgets": statuses.iter().map(status_row).collect::<Vec<_>>(),
        "budget_form": form_rows(&editable),
        "action": action,
        "back": back,
    });
    state.page(visitor, "key_budgets.html", context)
}

/// The console's page of one key's budgets.
pub async fn console_key_budgets(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let store = state.store();
    let key = store
        .get_key(&id)
        .await?
        .ok_or_else(|| PortalError::not_found("No such key."))?;
    let app = store
        .get_application(&key.application_id)
        .await?
        .ok_or_else(|| PortalError::not_found("No such key."))?;
    key_budgets_page(&state, &visitor, &key, &app, true).await
}

/// An admin sets all of a key's budgets.
pub async fn console_set_key_budgets(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    crate::console::require_admin(&visitor)?;
    let (budgets, _) = read_form(&form)?;
    let key = visitor
        .store(&state)
        .set_key_budgets(&id, budgets)
        .await
        .map_err(refused)?;
    Ok(visitor.redirect(&format!("/admin/applications/{}", key.application_id)))
}

/// An owner's page of one of the organization's keys' budgets.
pub async fn owner_key_budgets(
    State(state): State<PortalState>,
    developer: crate::session::Developer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let (app, key) = crate::keys::own_key(&state, &developer.0, &id).await?;
    key_budgets_page(&state, &developer.0, &key, &app, false).await
}

/// An owner sets budgets of their own on a key; an admin's stay.
pub async fn owner_set_key_budgets(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let (app, key) = crate::keys::own_key(&state, &visitor, &id).await?;
    let session = crate::developer::signed_in(&visitor)?;
    let (budgets, _) = read_form(&form)?;
    visitor
        .store(&state)
        .set_key_budgets_as_owner(&session.user.id, &key.id, budgets)
        .await
        .map_err(refused)?;
    Ok(visitor.redirect(&format!("/applications/{}", app.id)))
}

/// An admin sets the budgets of an application's organization from the
/// application's console page, at the version of the account it showed.
pub async fn console_set_organization_budgets(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    crate::console::require_admin(&visitor)?;
    let (budgets, version) = read_form(&form)?;
    let app = state
        .store()
        .get_application(&id)
        .await?
        .ok_or_else(|| PortalError::not_found("No such application."))?;
    visitor
        .store(&state)
        .set_account_budgets(&app.account_id, budgets, maas_store::Precondition::Matches(version))
        .await
        .map_err(refused)?;
    Ok(visitor.redirect(&format!("/admin/applications/{id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_form_reads_rows_and_names_the_bad_one() {
        let budgets = parse_budget_form(&form(&[
            ("period_0", "month"),
            ("amount_0", "25.5"),
            ("mode_0", "hard"),
            ("alerts_0", "50, 80,100"),
            ("period_1", "day"),
            ("amount_1", ""),
            ("period_2", "day"),
            ("amount_2", "1"),
            ("mode_2", "soft"),
            ("alerts_2", ""),
        ]))
        .unwrap();
        assert_eq!(budgets.len(), 2, "an empty amount is no budget");
        assert_eq!(
            (budgets[0].amount.to_string(), budgets[0].alert_at_percent.clone()),
            ("25.5".into(), vec![50, 80, 100])
        );
        assert_eq!(
            (budgets[1].mode, budgets[1].alert_at_percent.len()),
            (BudgetMode::Soft, 0)
        );
        for (pairs, says) in [
            (vec![("period_0", "year"), ("amount_0", "1")], "Row 1: `year`"),
            (vec![("period_3", "day"), ("amount_3", "-1")], "Row 4: the amount"),
            (
                vec![("period_0", "day"), ("amount_0", "1"), ("alerts_0", "50, 300")],
                "`300`",
            ),
            (
                vec![("period_0", "day"), ("amount_0", "1"), ("mode_0", "strict")],
                "`strict`",
            ),
        ] {
            let error = parse_budget_form(&form(&pairs)).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }
}
