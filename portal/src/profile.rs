//! A user's own account: their name, their password and their sessions
//! (where each was opened; end one, or every other); and the page behind
//! an admin's password reset link.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maas_store::{AttemptEnd, AttemptLimit, AttemptStart, UserUpdate};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PortalState;
use crate::accounts::{MAX_NAME, counted_password_hash, password_problem, too_many};
use crate::developer::{signed_in, when};
use crate::render::PortalError;
use crate::security::{ClientAddress, encode_query_value};
use crate::session::{Developer, NoFields, Posted, SignedIn, Visitor};

/// Wrong current passwords a user may give in [`CHANGE_WINDOW_SECS`]: a
/// stolen session cannot guess its way to the password.
const MAX_WRONG_CURRENT: u64 = 10;
const CHANGE_WINDOW_SECS: u64 = 15 * 60;

/// The profile page; `notice` says what just happened, `error` what went wrong.
async fn profile_page(
    state: &PortalState,
    visitor: &Visitor,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, PortalError> {
    let session = signed_in(visitor)?;
    let user = &session.user;
    let sessions: Vec<Value> = state
        .store()
        .user_sessions(user)
        .await?
        .iter()
        .rev()
        .map(|s| {
            json!({"handle": s.handle, "created_at": when(s.created_at), "expires_at": when(s.expires_at),
                "ip": s.ip, "agent": s.agent, "current": s.is_session(&session.session_id)})
        })
        .collect();
    let context = json!({"page": "profile", "profile": {"name": user.display_name, "email": user.email,
            "has_password": user.password_hash.is_some(), "sso": user.sso.is_some()},
        "sessions": sessions, "notice": notice, "error": error});
    let mut response = state.page(visitor, "profile.html", context)?;
    if error.is_some() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn page(State(state): State<PortalState>, developer: Developer) -> Result<Response, PortalError> {
    profile_page(&state, &developer.0, None, None).await
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    display_name: String,
}

pub async fn rename(
    State(state): State<PortalState>,
    Posted { visitor, form }: Posted<NameForm>,
) -> Result<Response, PortalError> {
    let user_id = signed_in(&visitor)?.user.id.clone();
    let name = form.display_name.trim();
    if name.chars().count() > MAX_NAME {
        return profile_page(&state, &visitor, None, Some("Your name: at most 200 characters.")).await;
    }
    let update = UserUpdate {
        display_name: Some(name.to_owned()),
        ..UserUpdate::default()
    };
    visitor.store(&state).update_user(&user_id, update).await?;
    Ok(visitor.redirect("/profile"))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    current: String,
    new: String,
}

/// Changes the password after checking the current one; every other
/// session ends, this one goes on (a new session at the new epoch).
pub async fn change_password(
    State(state): State<PortalState>,
    Posted { mut visitor, form }: Posted<PasswordForm>,
) -> Result<Response, PortalError> {
    let SignedIn { user, account, .. } = signed_in(&visitor)?.clone();
    let Some(hash) = user.password_hash.clone() else {
        return Err(PortalError::bad_request(
            "You sign in through the company sign-in: your password is changed there.",
        ));
    };
    if let Some(problem) = password_problem(&form.new, &[&user.email, &user.display_name, &account.name]) {
        return profile_page(&state, &visitor, None, Some(&problem)).await;
    }
    let store = state.store();
    let limits = [AttemptLimit::new(&["password change", &user.id], MAX_WRONG_CURRENT)];
    let attempt = match store.begin_attempt(&limits, CHANGE_WINDOW_SECS).await? {
        AttemptStart::Began(attempt) => attempt,
        AttemptStart::TooMany { retry_after_secs, .. } => {
            return Ok(too_many(retry_after_secs, "Too many wrong passwords."));
        }
    };
    let current = Some(form.current).filter(|p| p.chars().count() <= 1024);
    let matches = match current {
        Some(current) => state.inner.password_checks.verify(current, Some(hash)).await,
        None => Ok(false),
    };
    match matches {
        Ok(true) => store.end_attempt(attempt, AttemptEnd::Refunded).await?,
        Ok(false) => {
            store.end_attempt(attempt, AttemptEnd::Counted).await?;
            return profile_page(&state, &visitor, None, Some("Your current password is not that one.")).await;
        }
        Err(busy) => {
            store.end_attempt(attempt, AttemptEnd::Refunded).await?;
            return Ok(busy.into_response());
        }
    }
    let new_hash = match state.inner.password_checks.hash(form.new).await {
        Ok(hashed) => hashed?,
        Err(busy) => return Ok(busy.into_response()),
    };
    let user = visitor.store(&state).change_password(&user, new_hash).await?;
    visitor.sign_in(&state, user, account).await?;
    profile_page(
        &state,
        &visitor,
        Some("Your password is changed. Every other session of yours is signed out."),
        None,
    )
    .await
}

/// Signs out every session of the user but this one.
pub async fn end_other_sessions(
    State(state): State<PortalState>,
    Posted { mut visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let SignedIn { user, account, .. } = signed_in(&visitor)?.clone();
    let user = visitor.store(&state).end_sessions(&user).await?;
    visitor.sign_in(&state, user, account).await?;
    Ok(visitor.redirect("/profile"))
}

/// Signs out the user's session listed as `handle` (this one too, if it is).
pub async fn end_session(
    State(state): State<PortalState>,
    Path(handle): Path<String>,
    Posted { mut visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let session = signed_in(&visitor)?.clone();
    if !state.store().end_user_session(&session.user, &handle).await? {
        return Err(PortalError::not_found(
            "No such session of yours (it may have ended already).",
        ));
    }
    if maas_store::session_handle(&session.session_id) == handle {
        visitor.sign_out(&state).await?;
        return Ok(visitor.redirect("/"));
    }
    Ok(visitor.redirect("/profile"))
}

/// The page behind an admin's reset link: a form for the new password.
pub async fn reset_page(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(secret): Path<String>,
) -> Result<Response, PortalError> {
    let user = reset_user(&state, &secret).await?;
    state.page(
        &visitor,
        "password_reset.html",
        json!({"page": "reset", "secret": secret, "email": user.email}),
    )
}

async fn reset_user(state: &PortalState, secret: &str) -> Result<maas_store::model::User, PortalError> {
    state.store().password_reset_user(secret).await?.ok_or_else(|| {
        PortalError::not_found("This link was used, replaced or has expired. Ask an administrator for a new one.")
    })
}

#[derive(Deserialize)]
pub struct ResetForm {
    password: String,
}

/// Sets the password of the link's user, uses the link up and ends their
/// sessions; then they sign in with it.
pub async fn reset(
    State(state): State<PortalState>,
    ClientAddress(address): ClientAddress,
    Path(secret): Path<String>,
    Posted { visitor, form }: Posted<ResetForm>,
) -> Result<Response, PortalError> {
    let user = reset_user(&state, &secret).await?;
    if let Some(problem) = password_problem(&form.password, &[&user.email, &user.display_name]) {
        let context = json!({"page": "reset", "secret": secret, "email": user.email, "error": problem});
        let mut response = state.page(&visitor, "password_reset.html", context)?;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(response);
    }
    let hash = match counted_password_hash(&state, address, form.password).await? {
        Ok(hash) => hash,
        Err(refused) => return Ok(refused),
    };
    let user = visitor.store(&state).reset_password(&secret, hash).await?;
    let next = "/applications";
    let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(next),
        "email": user.email, "sso": state.sso().map(|s| s.display_name().to_owned()),
        "notice": "Your password is set: sign in with it."});
    state.page(&visitor, "sign_in.html", context)
}
