//! A developer's API keys: issued (shown once), rotated, revoked after
//! asking, and listed with when each was last used.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maas_store::model::{ApiKey, Application};
use maas_store::{NewKey, Store};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::PortalState;
use crate::developer::{application_page, own_application, signed_in, when};
use crate::render::PortalError;
use crate::session::{Developer, Posted, Visitor};

/// An application's keys as the portal and the console list them, oldest
/// first, each with when a proxy last saw it used (to the minute).
pub(crate) async fn key_rows(store: &Store, application_id: &str) -> Result<Vec<Value>, PortalError> {
    let mut keys = store.application_keys(application_id).await?;
    keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let last_used = store.keys_last_used(&ids).await?;
    let now = OffsetDateTime::now_utc();
    Ok(keys
        .into_iter()
        .zip(last_used)
        .map(|(k, last_used)| {
            json!({
                "id": k.id, "masked": k.masked(), "label": k.label, "created_at": when(k.created_at),
                "expires_at": k.expires_at.map(when), "revoked": k.revoked_at.is_some(),
                "active": k.is_usable_at(now), "last_used": last_used.map(when),
            })
        })
        .collect())
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    label: String,
    /// For rotation: hours the old key keeps working.
    #[serde(default)]
    grace_hours: Option<u32>,
    /// How many keys the application had when the form was shown: a form
    /// sent again (a reload after the POST) finds more and issues nothing.
    #[serde(default)]
    keys_seen: Option<usize>,
}

/// Whether a key form shown when the application had `seen` keys is still
/// current. Reloading the page a POST answered sends the form again; it
/// must not issue a second key whose secret nobody saw before the first
/// one's. (The secret is never kept, so it cannot be shown again after a
/// redirect: the stale form leads to the application's page instead.)
async fn key_form_is_current(state: &PortalState, app: &Application, seen: Option<usize>) -> Result<bool, PortalError> {
    let Some(seen) = seen else {
        return Ok(true);
    };
    Ok(state.store().application_keys(&app.id).await?.len() == seen)
}

pub async fn create_key(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<KeyForm>,
) -> Result<Response, PortalError> {
    let app = own_application(&state, signed_in(&visitor)?, &id).await?;
    if !key_form_is_current(&state, &app, form.keys_seen).await? {
        return Ok(visitor.redirect(&format!("/applications/{}", app.id)));
    }
    let issued = visitor
        .store(&state)
        .create_key(
            &app.id,
            NewKey {
                label: form.label.trim().to_owned(),
                expires_at: None,
            },
        )
        .await?;
    let mut response = application_page(&state, &visitor, app, Some(issued.secret.into_string())).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Key `id` and its application, if the application is the visitor's.
pub(crate) async fn own_key(
    state: &PortalState,
    visitor: &Visitor,
    id: &str,
) -> Result<(Application, ApiKey), PortalError> {
    let session = signed_in(visitor)?;
    let key = state.store().get_key(id).await?;
    let key = key.ok_or_else(|| PortalError::not_found("No such key."))?;
    let app = own_application(state, session, &key.application_id)
        .await
        .map_err(|_| PortalError::not_found("No such key."))?;
    Ok((app, key))
}

/// Asks before revoking key `id`: a revoked key cannot be brought back,
/// and without script a button cannot ask (the CSP allows none inline).
pub async fn confirm_revoke_key(
    State(state): State<PortalState>,
    developer: Developer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let (app, key) = own_key(&state, &developer.0, &id).await?;
    if key.revoked_at.is_some() {
        return Ok(developer.0.redirect(&format!("/applications/{}", app.id)));
    }
    state.page(
        &developer.0,
        "key_revoke.html",
        json!({"page": "applications", "app": {"id": app.id, "name": app.name},
            "key": {"id": key.id, "masked": key.masked(), "label": key.label}}),
    )
}

pub async fn revoke_key(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, .. }: Posted<KeyForm>,
) -> Result<Response, PortalError> {
    let (app, _) = own_key(&state, &visitor, &id).await?;
    visitor.store(&state).revoke_key(&id).await?;
    Ok(visitor.redirect(&format!("/applications/{}", app.id)))
}

pub async fn rotate_key(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<KeyForm>,
) -> Result<Response, PortalError> {
    let (app, _) = own_key(&state, &visitor, &id).await?;
    if !key_form_is_current(&state, &app, form.keys_seen).await? {
        return Ok(visitor.redirect(&format!("/applications/{}", app.id)));
    }
    let grace = time::Duration::hours(i64::from(form.grace_hours.unwrap_or(24).min(720)));
    let issued = visitor.store(&state).rotate_key(&id, grace).await?;
    let mut response = application_page(&state, &visitor, app, Some(issued.secret.into_string())).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}
