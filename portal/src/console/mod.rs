//! The admin console: overview, applications (approve, suspend, resume),
//! accounts and users, products with promotion (diff, promote, rollback),
//! and the audit log. Only for signed-in users with the admin role: anyone
//! else signed in gets 403 on every page and every action. Changes go
//! through the same store calls as the admin API, as the admin (audit log).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use maas_store::model::{
    Application, ApplicationState, COMPLETION_TOKENS, HITS, PROMPT_TOKENS, Product, TOTAL_TOKENS, UserRole, UserState,
};
use maas_store::period::Period;
use maas_store::{ApplicationFilter, AuditQuery, Environment, Page, UserUpdate, all_pages};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::PortalState;
use crate::developer::when;
use crate::render::PortalError;
use crate::session::{Developer, NoFields, Posted, Visitor};

mod applications;
mod editor;
use applications::application_row;
pub use applications::{application, application_action, applications, change_plan, revoke_key};
pub use editor::{edit_page as edit_product, save as save_product};

/// A signed-in admin; others signed in get 403, visitors are sent to sign in.
pub struct AdminUser(pub Visitor);

impl FromRequestParts<PortalState> for AdminUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<AdminUser, Response> {
        let Developer(visitor) = Developer::from_request_parts(parts, state).await?;
        if visitor.signed_in.as_ref().is_some_and(|s| s.is_admin()) {
            Ok(AdminUser(visitor))
        } else {
            Err(PortalError::forbidden("The admin console is for administrators.").into_response())
        }
    }
}

/// The visitor of an admin form, refused unless an admin.
pub(crate) fn require_admin(visitor: &Visitor) -> Result<(), PortalError> {
    match &visitor.signed_in {
        Some(s) if s.is_admin() => Ok(()),
        _ => Err(PortalError::forbidden("The admin console is for administrators.")),
    }
}

pub(super) async fn all_applications(
    state: &PortalState,
    filter: &ApplicationFilter,
) -> Result<Vec<Application>, PortalError> {
    let store = state.store();
    Ok(all_pages(|page: Page| async move { store.list_applications(filter, &page).await }).await?)
}

pub async fn overview(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
) -> Result<Response, PortalError> {
    let store = state.store();
    let apps = all_applications(&state, &ApplicationFilter::default()).await?;
    let accounts = all_pages(|page: Page| async move { store.list_accounts(&page).await }).await?;
    let count = |s: ApplicationState| apps.iter().filter(|a| a.state == s).count();
    let ids: Vec<String> = apps.iter().map(|a| a.id.clone()).collect();
    let to = OffsetDateTime::now_utc();
    let from = to - time::Duration::days(1) + time::Duration::seconds(1);
    let mut last_day = serde_json::Map::new();
    for metric in [HITS, PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS] {
        let points = store.usage_series_total(&ids, metric, Period::Hour, from, to).await?;
        let total: u64 = points.iter().map(|p| p.value).sum();
        last_day.insert(metric.into(), json!(total));
    }
    let mut top = Vec::new();
    for app in &apps {
        let tokens = store.usage(&app.id, TOTAL_TOKENS, Period::Day, to).await?;
        if tokens > 0 {
            top.push((tokens, app));
        }
    }
    top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let top: Vec<Value> = top
        .iter()
        .take(10)
        .map(|(tokens, app)| json!({"id": app.id, "name": app.name, "product": app.product, "tokens": tokens}))
        .collect();
    let pending: Vec<Value> = apps
        .iter()
        .filter(|a| a.state == ApplicationState::Pending || a.requested_plan.is_some())
        .map(application_row)
        .collect();
    let context = json!({
        "page": "admin", "section": "overview",
        "counts": {"accounts": accounts.len(), "applications": apps.len(), "live": count(ApplicationState::Live),
                   "pending": count(ApplicationState::Pending), "suspended": count(ApplicationState::Suspended)},
        "last_day": last_day, "top": top, "pending": pending,
    });
    state.page(&visitor, "admin_overview.html", context)
}

pub async fn accounts(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
) -> Result<Response, PortalError> {
    let store = state.store();
    let accounts = all_pages(|page: Page| async move { store.list_accounts(&page).await }).await?;
    let mut rows = Vec::new();
    for account in accounts {
        let users = crate::team::members(&state, &account.id).await?;
        let evidence = (account.sso.is_none()).then(|| organizations_named(&users));
        let users: Vec<Value> = users
            .iter()
            .map(|u| {
                json!({"id": u.id, "email": u.email, "name": u.display_name, "role": u.role,
                            "team_role": u.team_role.as_str(), "state": u.state, "sso": u.sso.is_some(),
                            "has_password": u.password_hash.is_some(), "organization": u.stated_organization})
            })
            .collect();
        rows.push(
            json!({"id": account.id, "name": account.name, "shown": account.display_name,
                         "bound": account.sso.as_ref().map(|b| &b.claim_value),
                         "evidence": evidence, "users": users}),
        );
    }
    state.page(
        &visitor,
        "admin_accounts.html",
        json!({"page": "admin", "section": "accounts", "accounts": rows}),
    )
}

/// What the members of an unbound account say of its organization: the
/// organizations their provider named (each once, with how many members),
/// and whether they disagree, so the account waits for an admin.
fn organizations_named(users: &[maas_store::model::User]) -> Value {
    let mut named: Vec<(&str, usize)> = Vec::new();
    for organization in users.iter().filter_map(|u| u.stated_organization.as_deref()) {
        match named.iter_mut().find(|(o, _)| *o == organization) {
            Some((_, count)) => *count += 1,
            None => named.push((organization, 1)),
        }
    }
    let unknown = users.iter().filter(|u| u.stated_organization.is_none()).count();
    json!({
        "organizations": named.iter().map(|(o, n)| json!({"name": o, "members": n})).collect::<Vec<_>>(),
        "unknown": unknown,
        "disagree": named.len() > 1 || (!named.is_empty() && unknown > 0),
    })
}

#[derive(Deserialize)]
pub struct OrganizationForm {
    organization: String,
}

/// `bind` an unbound account to an organization its members' provider
/// named, or `split` it: bind it, and move the members of other
/// organizations to theirs.
pub async fn account_action(
    State(state): State<PortalState>,
    Path((id, action)): Path<(String, String)>,
    Posted { visitor, form }: Posted<OrganizationForm>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    let store = visitor.store(&state);
    let account = store
        .get_account(&id)
        .await?
        .ok_or_else(|| PortalError::not_found("No such account."))?;
    let members = crate::team::members(&state, &account.id).await?;
    // The provider is the one that named the organization for a member.
    let issuer = members
        .iter()
        .filter(|u| u.stated_organization.as_deref() == Some(form.organization.as_str()))
        .find_map(|u| u.sso.as_ref().map(|sso| sso.issuer.clone()))
        .ok_or_else(|| PortalError::bad_request("No member's identity provider names that organization."))?;
    let binding = maas_store::model::AccountBinding {
        issuer,
        claim_value: form.organization,
    };
    match action.as_str() {
        "bind" => {
            store.bind_account(&account, &binding).await?;
        }
        "split" => {
            store.split_account(&account, &binding).await?;
        }
        _ => return Err(PortalError::not_found("No such action.")),
    }
    Ok(visitor.redirect("/admin/accounts"))
}

/// `activate`, `disable`, `make-admin` or `make-member` a user, or make
/// them a `reset-password` link.
pub async fn user_action(
    State(state): State<PortalState>,
    Path((id, action)): Path<(String, String)>,
    Posted { visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    if action == "reset-password" {
        return password_reset_link(&state, &visitor, &id).await;
    }
    let mut update = UserUpdate::default();
    match action.as_str() {
        "activate" => update.state = Some(UserState::Active),
        "disable" => update.state = Some(UserState::Disabled),
        "make-admin" => update.role = Some(UserRole::Admin),
        "make-member" => update.role = Some(UserRole::Member),
        _ => return Err(PortalError::not_found("No such action.")),
    }
    let own = visitor.signed_in.as_ref().is_some_and(|s| s.user.id == id);
    if own && matches!(action.as_str(), "disable" | "make-member") {
        return Err(PortalError::bad_request("You cannot take away your own access."));
    }
    visitor.store(&state).update_user(&id, update).await?;
    Ok(visitor.redirect("/admin/accounts"))
}

/// How long an admin's password reset link works.
const RESET_LINK_HOURS: i64 = 24;

/// Makes user `id` a one-time link to set their password and shows it,
/// once.
async fn password_reset_link(state: &PortalState, visitor: &Visitor, id: &str) -> Result<Response, PortalError> {
    let store = visitor.store(state);
    let user = store
        .get_user(id)
        .await?
        .ok_or_else(|| PortalError::not_found("No such user."))?;
    let secret = store
        .issue_password_reset(&user.id, time::Duration::hours(RESET_LINK_HOURS))
        .await?;
    let link = format!(
        "{}/reset-password/{secret}",
        state.options().public_url.trim_end_matches('/')
    );
    let context = json!({"page": "admin", "section": "accounts", "email": user.email, "link": link,
        "hours": RESET_LINK_HOURS});
    let mut response = state.page(visitor, "admin_reset_link.html", context)?;
    *response.status_mut() = axum::http::StatusCode::CREATED;
    Ok(response)
}

/// The top-level fields where `a` and `b` differ, with both values.
fn diff(a: &Value, b: &Value) -> Vec<Value> {
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| {
                v.map_or("(none)".to_owned(), |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                })
            };
            json!({"field": k, "before": show(b.get(k)), "after": show(a.get(k))})
        })
        .collect()
}

pub async fn products(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
) -> Result<Response, PortalError> {
    let store = state.store();
    let mut rows = Vec::new();
    for draft in store.list_products().await? {
        let name = draft.system_name.clone();
        let staging = store.release(&name, Environment::Staging).await?;
        let production = store.release(&name, Environment::Production).await?;
        let releases = store.releases(&name).await?;
        let draft_json = serde_json::to_value(&draft).unwrap_or_default();
        let staging_json = staging
            .as_ref()
            .map(|r| serde_json::to_value(&r.config).unwrap_or_default());
        let production_json = production
            .as_ref()
            .map(|r| serde_json::to_value(&r.config).unwrap_or_default());
        let plans: Vec<Value> = store
            .list_plans(Some(&name))
            .await?
            .iter()
            .map(|p| {
                json!({"name": p.display_name(), "system_name": p.system_name, "published": p.published,
                            "approval_required": p.approval_required, "limits": p.limits.len()})
            })
            .collect();
        let rules: Vec<Value> = draft
            .effective_mapping_rules()
            .iter()
            .map(|r| {
                json!({"method": format!("{:?}", r.http_method).to_uppercase(), "pattern": r.pattern,
                            "metric": r.metric, "increment": r.increment, "last": r.last})
            })
            .collect();
        let facts = side_by_side(
            &draft,
            staging.as_ref().map(|r| &r.config),
            production.as_ref().map(|r| &r.config),
        );
        rows.push(json!({
            "mapping_rules": rules, "facts": facts,
            "system_name": name, "name": draft.name,
            "staging": staging.as_ref().map(|r| r.version), "production": production.as_ref().map(|r| r.version),
            "draft_changes": diff(&draft_json, staging_json.as_ref().unwrap_or(&Value::Null)),
            "staging_changes": staging_json.as_ref().map(|s| diff(s, production_json.as_ref().unwrap_or(&Value::Null))),
            "versions": releases.iter().map(|r| json!({"version": r.version, "created_at": when(r.created_at)})).collect::<Vec<_>>(),
            "plans": plans,
        }));
    }
    state.page(
        &visitor,
        "admin_products.html",
        json!({"page": "admin", "section": "products", "products": rows}),
    )
}

/// What people check on a product card, as text.
fn product_facts(product: &Product) -> Vec<(&'static str, String)> {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "—".to_owned()
        } else {
            items.join(", ")
        }
    };
    vec![
        ("Name", product.display_name().to_owned()),
        ("Backend", product.backend.clone()),
        ("Models", list(product.models.clone())),
        (
            "Endpoint",
            match &product.path_prefix {
                Some(prefix) => format!("{prefix}/v1, and /v1 by model"),
                None => "/v1 by model".to_owned(),
            },
        ),
        (
            "Keys in",
            list(
                product
                    .credentials
                    .locations
                    .iter()
                    .map(|l| format!("{l:?}").to_lowercase())
                    .collect(),
            ),
        ),
        (
            "CORS",
            product
                .cors
                .as_ref()
                .map_or_else(|| "off".to_owned(), |c| c.allow_origins.join(", ")),
        ),
        (
            "Stream usage",
            format!("{:?}", product.metering.stream_usage).to_lowercase(),
        ),
        (
            "Methods",
            list(product.effective_methods().into_iter().map(|m| m.system_name).collect()),
        ),
        (
            "Metrics",
            list(product.metrics.iter().map(|m| m.system_name.clone()).collect()),
        ),
        ("Mapping rules", product.effective_mapping_rules().len().to_string()),
    ]
}

/// Each fact of the draft beside what staging and production serve
/// (`null` where nothing is released), marked where they differ.
fn side_by_side(draft: &Product, staging: Option<&Product>, production: Option<&Product>) -> Vec<Value> {
    let staged = staging.map(product_facts);
    let produced = production.map(product_facts);
    product_facts(draft)
        .into_iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let staging = staged.as_ref().map(|f| f[i].1.clone());
            let production = produced.as_ref().map(|f| f[i].1.clone());
            let differs = staging.as_ref() != Some(&value) || production.as_ref() != Some(&value);
            json!({"label": label, "draft": value, "staging": staging, "production": production, "differs": differs})
        })
        .collect()
}

pub async fn backends(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
) -> Result<Response, PortalError> {
    let store = state.store();
    let reports = store.proxy_reports().await?;
    let now = store.clock().now().unix_timestamp();
    let rows: Vec<Value> = store
        .list_backends()
        .await?
        .iter()
        .map(|b| {
            json!({"system_name": b.system_name, "name": b.name, "urls": b.urls, "health_path": b.health_path,
                        "timeouts": b.timeouts, "api_key_env": b.api_key_env,
                        "live": live_replicas(&b.system_name, &reports, now)})
        })
        .collect();
    state.page(
        &visitor,
        "admin_backends.html",
        json!({"page": "admin", "section": "backends", "backends": rows, "proxies": reports.len()}),
    )
}

/// What every proxy last reported of `backend`'s replicas, one row per
/// proxy and replica, with how long ago (seconds) the proxy reported and
/// the replica's last error happened.
fn live_replicas(backend: &str, reports: &[maas_store::ProxyReport], now: i64) -> Vec<Value> {
    let mut rows = Vec::new();
    for report in reports {
        let Some(seen) = report.backends.iter().find(|b| b.backend == backend) else {
            continue;
        };
        for replica in &seen.replicas {
            rows.push(json!({
                "proxy": report.proxy, "silent": report.is_silent(now),
                "reported_ago": (now - report.reported_at).max(0), "queued": seen.queued,
                "url": replica.url, "up": replica.up, "in_flight": replica.in_flight, "load": replica.load,
                "last_error": replica.last_error,
                "last_error_ago": replica.last_error_at.map(|at| (now - at).max(0)),
            }));
        }
    }
    rows
}

#[derive(Deserialize)]
pub struct ReleaseForm {
    environment: Environment,
    version: Option<u64>,
}

pub async fn promote(
    State(state): State<PortalState>,
    Path(name): Path<String>,
    Posted { visitor, form }: Posted<ReleaseForm>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    visitor.store(&state).promote(&name, form.environment).await?;
    Ok(visitor.redirect("/admin/products"))
}

pub async fn rollback(
    State(state): State<PortalState>,
    Path(name): Path<String>,
    Posted { visitor, form }: Posted<ReleaseForm>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    let version = form
        .version
        .ok_or_else(|| PortalError::bad_request("Choose the version to roll back to."))?;
    visitor.store(&state).rollback(&name, form.environment, version).await?;
    Ok(visitor.redirect("/admin/products"))
}

#[derive(Deserialize)]
pub struct AuditFilter {
    /// An email (a user's), or a user or admin token id.
    actor: Option<String>,
    entity: Option<String>,
    entity_id: Option<String>,
    /// `YYYY-MM-DD`, UTC: from the start of this day.
    from: Option<String>,
    /// `YYYY-MM-DD`, UTC: to the end of this day.
    to: Option<String>,
    before: Option<String>,
}

/// A day's start (UTC) from `YYYY-MM-DD`.
fn day_start(field: &str, text: &str) -> Result<OffsetDateTime, PortalError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text.trim(), &format)
        .map(|date| date.midnight().assume_utc())
        .map_err(|_| PortalError::bad_request(format!("{field}: a date such as 2026-11-26.")))
}

/// Who did it, for people: a user's name and email (their id when the
/// user is gone), an admin token's id, the CLI or the system.
async fn actor_label(
    store: &maas_store::Store,
    actor: &maas_store::Actor,
    known: &mut std::collections::HashMap<String, String>,
) -> Result<String, PortalError> {
    if actor.kind != "user" {
        return Ok(format!("{} {}", actor.kind.replace('_', " "), actor.id));
    }
    if let Some(label) = known.get(&actor.id) {
        return Ok(label.clone());
    }
    let label = match store.get_user(&actor.id).await? {
        Some(user) if user.display_name.is_empty() => user.email,
        Some(user) => format!("{} <{}>", user.display_name, user.email),
        None => format!("user {} (deleted)", actor.id),
    };
    known.insert(actor.id.clone(), label.clone());
    Ok(label)
}

pub async fn audit(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
    Query(query): Query<AuditFilter>,
) -> Result<Response, PortalError> {
    let store = state.store();
    let given = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    // An email names a user (one nobody has matches nothing); anything
    // else is taken as an id.
    let (actor_id, nobody) = match given(&query.actor) {
        Some(actor) if actor.contains('@') => match store.find_user_by_email(&actor).await? {
            Some(user) => (Some(user.id), false),
            None => (None, true),
        },
        other => (other, false),
    };
    let since = given(&query.from).map(|d| day_start("From", &d)).transpose()?;
    let until = given(&query.to)
        .map(|d| day_start("To", &d).map(|start| start + time::Duration::days(1)))
        .transpose()?;
    let entries = if nobody {
        Vec::new()
    } else {
        store
            .audit_log(&AuditQuery {
                entity: given(&query.entity),
                entity_id: given(&query.entity_id),
                actor_id,
                before: given(&query.before),
                since,
                until,
                limit: 100,
            })
            .await?
    };
    let next = (entries.len() == 100)
        .then(|| entries.last().map(|e| e.id.clone()))
        .flatten();
    let mut known = std::collections::HashMap::new();
    let mut rows = Vec::with_capacity(entries.len());
    for e in &entries {
        let show = |v: &Option<Value>| v.as_ref().map(|v| serde_json::to_string_pretty(v).unwrap_or_default());
        rows.push(
            json!({"at": when(e.at), "actor": actor_label(store, &e.actor, &mut known).await?,
            "actor_id": e.actor.id, "ip": e.actor.ip, "action": e.action, "entity": e.entity,
            "entity_id": e.entity_id, "before": show(&e.before), "after": show(&e.after)}),
        );
    }
    let filter = json!({"actor": given(&query.actor), "entity": given(&query.entity),
        "entity_id": given(&query.entity_id), "from": given(&query.from), "to": given(&query.to)});
    let query_string = [
        ("actor", &query.actor),
        ("entity", &query.entity),
        ("entity_id", &query.entity_id),
        ("from", &query.from),
        ("to", &query.to),
    ]
    .iter()
    .filter_map(|(k, v)| given(v).map(|v| format!("{k}={}", crate::security::encode_query_value(&v))))
    .collect::<Vec<_>>()
    .join("&");
    let context = json!({"page": "admin", "section": "audit", "entries": rows, "next": next,
        "filter": filter, "query": query_string});
    state.page(&visitor, "admin_audit.html", context)
}
