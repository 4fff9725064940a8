//! The developer's pages: home, the models catalog and applications (keys
//! are in [`crate::keys`]).
//! Developers see only what production serves (released products,
//! published plans) and only their own account's applications; another
//! account's application is "not found", not "forbidden".

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maas_store::model::{Application, ApplicationState, Plan, Product};
use maas_store::{ApplicationFilter, Environment, NewApplication, Page, PlanChangeBy, Precondition, all_pages};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::PortalState;
use crate::render::PortalError;
use crate::session::{Developer, NoFields, Posted, SignedIn, Visitor};

/// A product as developers see it: its production release and published plans.
pub(crate) struct Offer {
    pub product: Product,
    pub plans: Vec<Plan>,
}

/// What production serves, with the plans a developer may choose.
async fn offers(state: &PortalState) -> Result<Vec<Offer>, PortalError> {
    let store = state.store();
    let mut offers = Vec::new();
    for draft in store.list_products().await? {
        let Some(release) = store.release(&draft.system_name, Environment::Production).await? else {
            continue;
        };
        let plans: Vec<Plan> = store
            .list_plans(Some(&draft.system_name))
            .await?
            .into_iter()
            .filter(|p| p.published)
            .collect();
        if !plans.is_empty() {
            offers.push(Offer {
                product: release.config,
                plans,
            });
        }
    }
    offers.sort_by(|a, b| a.product.display_name().cmp(b.product.display_name()));
    Ok(offers)
}

/// The served product `name`, or "not found".
pub(crate) async fn served_offer(state: &PortalState, name: &str) -> Result<Offer, PortalError> {
    offers(state)
        .await?
        .into_iter()
        .find(|o| o.product.system_name == name)
        .ok_or_else(|| PortalError::not_found("No such model is published here."))
}

/// Where a developer calls `product`.
pub(crate) fn endpoint(state: &PortalState, product: &Product) -> String {
    let base = state.options().gateway_url.trim_end_matches('/');
    match &product.path_prefix {
        Some(prefix) => format!("{base}{prefix}/v1"),
        None => format!("{base}/v1"),
    }
}

fn plan_context(plan: &Plan) -> Value {
    let limits: Vec<String> = plan
        .limits
        .iter()
        .map(|l| {
            format!(
                "{} {} per {}",
                group_digits(l.value),
                l.metric.replace('_', " "),
                l.period.as_str()
            )
        })
        .collect();
    let priced = plan.price_per_1k_prompt_tokens.micros > 0 || plan.price_per_1k_completion_tokens.micros > 0;
    json!({
        "system_name": plan.system_name,
        "name": plan.display_name(),
        "description": plan.description,
        "limits": limits,
        "max_tokens": plan.max_tokens,
        "approval_required": plan.approval_required,
        "default": plan.default,
        "price": priced.then(|| format!(
            "{} {} / {} per 1k prompt / completion tokens",
            plan.currency, plan.price_per_1k_prompt_tokens, plan.price_per_1k_completion_tokens
        )),
    })
}

pub(crate) fn offer_context(state: &PortalState, offer: &Offer) -> Value {
    json!({
        "system_name": offer.product.system_name,
        "name": offer.product.display_name(),
        "description": offer.product.description,
        "models": offer.product.models,
        "endpoint": endpoint(state, &offer.product),
        "model": offer.product.models.first().cloned().unwrap_or_else(|| "MODEL".into()),
        "plans": offer.plans.iter().map(plan_context).collect::<Vec<_>>(),
    })
}

/// `1234567` as `1,234,567`.
fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2026-11-26 11:30 UTC`: minutes are enough on a page.
pub(crate) fn when(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// `?state=` on the home page: the provider's return from a sign-out.
#[derive(serde::Deserialize)]
pub struct HomeQuery {
    state: Option<String>,
}

pub async fn home(
    State(state): State<PortalState>,
    mut visitor: Visitor,
    headers: axum::http::HeaderMap,
    axum::extract::Query(query): axum::extract::Query<HomeQuery>,
) -> Result<Response, PortalError> {
    let notice = query.state.as_deref().map(|returned| {
        if crate::sso::sign_out_returned(&state, &mut visitor, &headers, returned) {
            "You are signed out, here and at the company sign-in."
        } else {
            "The company sign-in sent back a sign-out this browser did not start; nothing was changed."
        }
    });
    let paragraphs: Vec<&str> = state
        .options()
        .brand
        .home_text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    state.page(
        &visitor,
        "home.html",
        json!({"page": "home", "paragraphs": paragraphs, "notice": notice}),
    )
}

pub async fn models(State(state): State<PortalState>, visitor: Visitor) -> Result<Response, PortalError> {
    let offers = offers(&state).await?;
    let products: Vec<Value> = offers.iter().map(|o| offer_context(&state, o)).collect();
    state.page(&visitor, "models.html", json!({"page": "models", "products": products}))
}

/// The signed-in account's application `id`.
pub(crate) async fn own_application(
    state: &PortalState,
    session: &SignedIn,
    id: &str,
) -> Result<Application, PortalError> {
    match state.store().get_application(id).await? {
        Some(app) if app.account_id == session.account.id => Ok(app),
        _ => Err(PortalError::not_found("No such application in your organization.")),
    }
}

fn state_label(state: ApplicationState) -> &'static str {
    match state {
        ApplicationState::Pending => "Waiting for approval",
        ApplicationState::Live => "Live",
        ApplicationState::Suspended => "Suspended",
    }
}

pub async fn applications(State(state): State<PortalState>, developer: Developer) -> Result<Response, PortalError> {
    let session = developer.session();
    let store = state.store();
    let filter = ApplicationFilter {
        account_id: Some(session.account.id.clone()),
        ..ApplicationFilter::default()
    };
    let apps = all_pages(|page: Page| {
        let filter = &filter;
        async move { store.list_applications(filter, &page).await }
    })
    .await?;
    // Products and plans by their display names; one removed since shows its system name.
    let products: std::collections::HashMap<String, String> = store
        .list_products()
        .await?
        .iter()
        .map(|p| (p.system_name.clone(), p.display_name().to_owned()))
        .collect();
    let plans: std::collections::HashMap<(String, String), String> = store
        .list_plans(None)
        .await?
        .iter()
        .map(|p| ((p.product.clone(), p.system_name.clone()), p.display_name().to_owned()))
        .collect();
    let mut rows = Vec::new();
    for app in apps {
        let keys = store.application_keys(&app.id).await?;
        let now = OffsetDateTime::now_utc();
        let key = keys.iter().filter(|k| k.is_usable_at(now)).map(|k| k.masked()).next();
        let product = products.get(&app.product).unwrap_or(&app.product);
        let plan = plans.get(&(app.product.clone(), app.plan.clone())).unwrap_or(&app.plan);
        rows.push(json!({
            "id": app.id, "name": app.name, "product": product, "plan": plan,
            "state": app.state.as_str(), "state_label": state_label(app.state), "key": key,
        }));
    }
    let budget_alerts = crate::budgets::banners(store, &session.account.id).await?;
    state.page(
        &developer.0,
        "applications.html",
        json!({"page": "applications", "applications": rows, "budget_alerts": budget_alerts}),
    )
}

#[derive(Deserialize)]
pub struct NewApplicationQuery {
    /// The product whose page the developer came from.
    product: Option<String>,
}

pub async fn new_application(
    State(state): State<PortalState>,
    axum::extract::Query(query): axum::extract::Query<NewApplicationQuery>,
    developer: Developer,
) -> Result<Response, PortalError> {
    let mut offers = offers(&state).await?;
    // A product of access tokens only has no applications to make here.
    offers.retain(|offer| offer.product.accepts(maas_store::model::AuthMethod::ApiKey));
    let products: Vec<Value> = offers.iter().map(|o| offer_context(&state, o)).collect();
    let chosen = preselected(&offers, query.product.as_deref());
    state.page(
        &developer.0,
        "application_new.html",
        json!({"page": "applications", "products": products, "chosen": chosen}),
    )
}

/// The one plan a new application's form starts on, as `product/plan`:
/// the default plan (else the first) of `product` when it is offered, else
/// of the first product offered.
fn preselected(offers: &[Offer], product: Option<&str>) -> Option<String> {
    let offer = product
        .and_then(|wanted| offers.iter().find(|o| o.product.system_name == wanted))
        .or_else(|| offers.first())?;
    let plan = offer.plans.iter().find(|p| p.default).or_else(|| offer.plans.first())?;
    Some(format!("{}/{}", offer.product.system_name, plan.system_name))
}

#[derive(Deserialize)]
pub struct NewApplicationForm {
    name: String,
    #[serde(default)]
    description: String,
    /// `product/plan`.
    plan: String,
}

pub async fn create_application(
    State(state): State<PortalState>,
    Posted { visitor, form }: Posted<NewApplicationForm>,
) -> Result<Response, PortalError> {
    let Some(session) = visitor.signed_in.clone() else {
        return Ok(visitor.redirect("/sign-in?next=/applications/new"));
    };
    let offers = offers(&state).await?;
    let chosen = form.plan.split_once('/').and_then(|(product, plan)| {
        offers
            .iter()
            .find(|o| o.product.system_name == product)
            .and_then(|o| o.plans.iter().find(|p| p.system_name == plan))
    });
    let Some(plan) = chosen else {
        return Err(PortalError::bad_request("Choose one of the published plans."));
    };
    let created = visitor
        .store(&state)
        .create_application(NewApplication {
            account_id: session.account.id.clone(),
            name: form.name.trim().to_owned(),
            description: form.description.trim().to_owned(),
            product: plan.product.clone(),
            plan: plan.system_name.clone(),
        })
        .await;
    match created {
        Ok(app) => Ok(visitor.redirect(&format!("/applications/{}", app.id))),
        Err(e @ (maas_store::StoreError::Invalid(_) | maas_store::StoreError::AlreadyExists { .. })) => {
            let products: Vec<Value> = offers.iter().map(|o| offer_context(&state, o)).collect();
            let context = json!({"page": "applications", "products": products, "error": e.to_string(),
                "name": form.name.chars().take(200).collect::<String>(),
                "description": form.description.chars().take(maas_store::MAX_DESCRIPTION).collect::<String>(),
                "chosen": form.plan});
            let mut response = state.page(&visitor, "application_new.html", context)?;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// The application page, with a key's secret when one was just issued.
pub(crate) async fn application_page(
    state: &PortalState,
    visitor: &Visitor,
    app: Application,
    issued: Option<String>,
) -> Result<Response, PortalError> {
    let store = state.store();
    let offers = offers(state).await?;
    let offer = offers.iter().find(|o| o.product.system_name == app.product);
    let keys = crate::keys::key_rows(store, &app.id).await?;
    let plan = store.get_plan(&app.product, &app.plan).await?;
    let (budgets, budget_alerts) = match store.get_account(&app.account_id).await? {
        Some(account) => (
            crate::budgets::budget_rows(store, &account, &app).await?,
            crate::budgets::banners(store, &account.id).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let owner = visitor
        .signed_in
        .as_ref()
        .is_some_and(|s| maas_store::is_owner(&s.user));
    let owned: Vec<&maas_store::model::Budget> = app
        .budgets
        .iter()
        .filter(|b| b.set_by == maas_store::model::BudgetAuthor::Owner)
        .collect();
    let context = json!({
        "budgets": budgets,
        "budget_alerts": budget_alerts,
        "can_set_budgets": owner,
        "budget_form": crate::budgets::form_rows(&owned),
        "page": "applications",
        "app": {
            "id": app.id, "name": app.name, "description": app.description, "product": app.product,
            "state": app.state.as_str(), "state_label": state_label(app.state),
            "requested_plan": app.requested_plan, "created_at": when(app.created_at),
            "version": maas_store::etag(&app),
        },
        "plan": plan.as_ref().map(plan_context),
        "product": offer.map(|o| offer_context(state, o)),
        "keys_seen": keys.len(),
        "keys": keys,
        "issued": issued,
    });
    state.page(visitor, "application.html", context)
}

pub async fn application(
    State(state): State<PortalState>,
    developer: Developer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let app = own_application(&state, developer.session(), &id).await?;
    application_page(&state, &developer.0, app, None).await
}

/// Asks before deleting application `id`: its keys stop working and it
/// cannot be brought back.
pub async fn confirm_delete_application(
    State(state): State<PortalState>,
    developer: Developer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let app = own_application(&state, developer.session(), &id).await?;
    let now = OffsetDateTime::now_utc();
    let active_keys = state
        .store()
        .application_keys(&app.id)
        .await?
        .iter()
        .filter(|k| k.is_usable_at(now))
        .count();
    state.page(
        &developer.0,
        "application_delete.html",
        json!({"page": "applications", "app": {"id": app.id, "name": app.name}, "active_keys": active_keys}),
    )
}

/// Deletes application `id` and its keys (the store audits who did).
pub async fn delete_application(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let app = own_application(&state, signed_in(&visitor)?, &id).await?;
    match visitor.store(&state).delete_application(&app.id).await {
        // Deleted meanwhile (a second tab): what was asked is done.
        Ok(()) | Err(maas_store::StoreError::NotFound { .. }) => Ok(visitor.redirect("/applications")),
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize)]
pub struct PlanForm {
    plan: String,
}

pub(crate) fn signed_in(visitor: &Visitor) -> Result<&SignedIn, PortalError> {
    visitor
        .signed_in
        .as_ref()
        .ok_or_else(|| PortalError::forbidden("Sign in first."))
}

/// The owner's plan change, by the store's rule: a plan that needs
/// approval is asked for, and the application keeps its plan until an
/// admin approves.
pub async fn change_plan(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<PlanForm>,
) -> Result<Response, PortalError> {
    let app = own_application(&state, signed_in(&visitor)?, &id).await?;
    visitor
        .store(&state)
        .change_plan(&app.id, &form.plan, PlanChangeBy::Owner, Precondition::Any)
        .await
        .map_err(|error| match error {
            maas_store::StoreError::Invalid(_) => {
                PortalError::bad_request("Choose one of the product's published plans.")
            }
            error => error.into(),
        })?;
    Ok(visitor.redirect(&format!("/applications/{}", app.id)))
}
