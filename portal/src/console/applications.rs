//! The console's applications: the list by state, one application with
//! its keys, traffic chart and plan, and the actions on it (approve,
//! decline, suspend, resume, change plan, revoke a key), each by the
//! store's rules and only as the admin saw it.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maas_store::model::{Application, ApplicationState, HITS, TOTAL_TOKENS};
use maas_store::period::Period;
use maas_store::{ApplicationAction, ApplicationFilter, PlanChangeBy, Precondition};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{AdminUser, all_applications, require_admin};
use crate::PortalState;
use crate::developer::when;
use crate::render::PortalError;
use crate::session::{NoFields, Posted};

pub(super) fn application_row(app: &Application) -> Value {
    json!({"id": app.id, "name": app.name, "account_id": app.account_id, "product": app.product,
           "plan": app.plan, "requested_plan": app.requested_plan, "state": app.state.as_str(),
           "created_at": when(app.created_at), "version": maas_store::etag(app)})
}

#[derive(Deserialize)]
pub struct ApplicationsQuery {
    state: Option<String>,
}

pub async fn applications(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
    Query(query): Query<ApplicationsQuery>,
) -> Result<Response, PortalError> {
    let filter_state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some("pending") => Some(ApplicationState::Pending),
        Some("live") => Some(ApplicationState::Live),
        Some("suspended") => Some(ApplicationState::Suspended),
        Some(other) => {
            return Err(PortalError::bad_request(format!(
                "`{other}` is not an application state."
            )));
        }
    };
    let filter = ApplicationFilter {
        state: filter_state,
        ..ApplicationFilter::default()
    };
    let apps = all_applications(&state, &filter).await?;
    let mut rows = Vec::new();
    for app in &apps {
        let mut row = application_row(app);
        let account = state.store().get_account(&app.account_id).await?;
        row["account"] = json!(account.map(|a| a.name).unwrap_or_default());
        rows.push(row);
    }
    let context = json!({"page": "admin", "section": "applications", "applications": rows,
        "state": query.state.unwrap_or_default()});
    state.page(&visitor, "admin_applications.html", context)
}

/// An action on what the admin saw: the application's version on the page.
#[derive(Deserialize)]
pub struct SeenVersionForm {
    version: String,
}

/// `approve`, `suspend`, `resume` or `decline` an application, by the
/// store's rules ([`ApplicationAction`]), only as the admin saw it: when
/// it changed since (its developer asked for another plan), nothing is
/// done and the admin is shown what it asks now.
pub async fn application_action(
    State(state): State<PortalState>,
    Path((id, action)): Path<(String, String)>,
    Posted { visitor, form }: Posted<SeenVersionForm>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    let action = ApplicationAction::parse(&action).ok_or_else(|| PortalError::not_found("No such action."))?;
    let acted = visitor
        .store(&state)
        .act_on_application(&id, action, Precondition::Matches(&form.version))
        .await;
    match acted {
        Ok(_) => Ok(visitor.redirect("/admin/applications")),
        Err(maas_store::StoreError::PreconditionFailed { .. }) => {
            Ok(visitor.redirect(&format!("/admin/applications/{id}?changed=1")))
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize)]
pub struct ApplicationPageQuery {
    #[serde(default)]
    changed: Option<String>,
    /// The traffic chart's period and metric, as on the statistics page.
    period: Option<String>,
    metric: Option<String>,
}

/// One application: its details and keys, with revocation.
pub async fn application(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
    Path(id): Path<String>,
    Query(query): Query<ApplicationPageQuery>,
) -> Result<Response, PortalError> {
    let store = state.store();
    let app = store
        .get_application(&id)
        .await?
        .ok_or_else(|| PortalError::not_found("No such application."))?;
    let account = store.get_account(&app.account_id).await?;
    let now = OffsetDateTime::now_utc();
    let keys = crate::keys::key_rows(store, &id).await?;
    let tokens = store.usage(&id, TOTAL_TOKENS, Period::Day, now).await?;
    let hits = store.usage(&id, HITS, Period::Day, now).await?;
    let plans: Vec<Value> = store
        .list_plans(Some(&app.product))
        .await?
        .iter()
        .map(|p| {
            json!({"system_name": p.system_name, "name": p.display_name(), "published": p.published,
            "approval_required": p.approval_required})
        })
        .collect();
    let traffic =
        crate::statistics::console_view(&state, &app, query.period.as_deref(), query.metric.as_deref()).await?;
    let mut row = application_row(&app);
    let budgets = match &account {
        Some(account) => crate::budgets::budget_rows(store, account, &app).await?,
        None => Vec::new(),
    };
    let budget_form = crate::budgets::form_rows(&app.budgets.iter().collect::<Vec<_>>());
    let organization = account.as_ref().map(|account| {
        json!({"id": account.id, "version": maas_store::etag(account),
            "form": crate::budgets::form_rows(&account.budgets.iter().collect::<Vec<_>>())})
    });
    row["account"] = json!(account.map(|a| a.name).unwrap_or_default());
    let context = json!({"page": "admin", "section": "applications", "app": row, "keys": keys,
        "today": {"hits": hits, "tokens": tokens}, "changed": query.changed.is_some(), "plans": plans,
        "traffic": traffic, "budgets": budgets, "budget_form": budget_form,
        "organization": organization});
    state.page(&visitor, "admin_application.html", context)
}

#[derive(Deserialize)]
pub struct PlanForm {
    // Defaults: a non-admin is told 403 whatever the form lacks.
    #[serde(default)]
    plan: String,
    #[serde(default)]
    version: String,
}

/// An admin moves an application to another plan of its product: by the
/// store's one rule ([`PlanChangeBy::Admin`]: at once, any plan of the
/// product, approval being the admin's to give), only as the admin saw it.
pub async fn change_plan(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<PlanForm>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    let changed = visitor
        .store(&state)
        .change_plan(
            &id,
            &form.plan,
            PlanChangeBy::Admin,
            Precondition::Matches(&form.version),
        )
        .await;
    match changed {
        Ok(_) => Ok(visitor.redirect(&format!("/admin/applications/{id}"))),
        Err(maas_store::StoreError::PreconditionFailed { .. }) => {
            Ok(visitor.redirect(&format!("/admin/applications/{id}?changed=1")))
        }
        Err(maas_store::StoreError::Invalid(_) | maas_store::StoreError::NotFound { kind: "plan", .. }) => {
            Err(PortalError::bad_request("Choose one of the product's plans."))
        }
        Err(error) => Err(error.into()),
    }
}

pub async fn revoke_key(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    let key = visitor.store(&state).revoke_key(&id).await?;
    Ok(visitor.redirect(&format!("/admin/applications/{}", key.application_id)))
}
