//! Local accounts: sign up, sign in, sign out. Passwords are hashed with
//! Argon2id (the PHC string is stored, never the password); failed
//! sign-ins are limited per address and email.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maas_store::model::{UserRole, UserState};
use maas_store::{NewAccount, NewUser};
use serde::Deserialize;
use serde_json::json;

use crate::PortalState;
use crate::render::PortalError;
use crate::security::{ClientAddress, encode_query_value, safe_next};
use crate::session::{NoFields, Posted, Visitor};

const AFTER_SIGN_IN: &str = "/applications";
const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;

/// Failed sign-ins allowed per key (an address, or an address and email)
/// in [`WINDOW`].
const MAX_FAILURES_PER_EMAIL: u32 = 10;
const MAX_FAILURES_PER_ADDRESS: u32 = 50;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed sign-ins in this replica (each replica counts its own, so
/// N replicas allow N times as many guesses; Argon2 keeps each one slow).
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Seconds until `keys` may try again, if any of them is over its limit.
    fn blocked(&self, keys: &[(String, u32)]) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|(key, max)| {
                let (count, since) = failures.get(key)?;
                let left = WINDOW.checked_sub(since.elapsed())?;
                (count >= max).then(|| left.as_secs().max(1))
            })
            .max()
    }

    fn failed(&self, keys: &[(String, u32)]) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        for (key, _) in keys {
            let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    fn succeeded(&self, email_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(email_key);
    }
}

/// The Argon2id PHC string of `password`.
pub async fn hash_password(password: String) -> Result<String, PortalError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
    })
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        PortalError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The password could not be stored.",
        )
    })
}

/// Compared against when the email is unknown, so both cases take as long.
static UNKNOWN_USER_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(b"no such user")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| UNKNOWN_USER_HASH.clone());
        let matches = PasswordHash::new(&hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        known && matches
    })
    .await
    .unwrap_or(false)
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn local_accounts_on(state: &PortalState) -> Result<(), PortalError> {
    if state.options().local_accounts {
        Ok(())
    } else {
        Err(PortalError::not_found(
            "Sign-in with a password is switched off here; use your company sign-in.",
        ))
    }
}

pub async fn sign_in_page(
    State(state): State<PortalState>,
    visitor: Visitor,
    Query(query): Query<NextQuery>,
) -> Result<Response, PortalError> {
    let next = safe_next(query.next.as_deref(), AFTER_SIGN_IN);
    if visitor.signed_in.is_some() {
        return Ok(visitor.redirect(next));
    }
    let sso = state.sso().map(|s| s.display_name().to_owned());
    let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(next), "sso": sso});
    state.page(&visitor, "sign_in.html", context)
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: String,
    password: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(state): State<PortalState>,
    ClientAddress(address): ClientAddress,
    Posted { mut visitor, form }: Posted<SignInForm>,
) -> Result<Response, PortalError> {
    local_accounts_on(&state)?;
    let next = safe_next(form.next.as_deref(), AFTER_SIGN_IN).to_owned();
    let ip = address.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let email = form.email.trim().to_lowercase();
    let keys = [
        (format!("{ip} {email}"), MAX_FAILURES_PER_EMAIL),
        (ip.clone(), MAX_FAILURES_PER_ADDRESS),
    ];
    let limiter = &state.inner.login_limiter;
    if let Some(wait) = limiter.blocked(&keys) {
        let mut response = PortalError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            format!(
                "Too many failed sign-ins. Try again in {} minute(s).",
                wait.div_ceil(60)
            ),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let user = state.store().find_user_by_email(&email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = verify_password(form.password, hash).await;
    let Some(user) = user.filter(|_| password_ok) else {
        limiter.failed(&keys);
        let sso = state.sso().map(|s| s.display_name().to_owned());
        let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(&next),
            "email": form.email, "sso": sso,
            "error": "That email and password do not match an account."});
        let mut response = state.page(&visitor, "sign_in.html", context)?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    };
    limiter.succeeded(&keys[0].0);
    if user.state != UserState::Active {
        let message = match user.state {
            UserState::Pending => "Your account waits for an administrator's approval.",
            _ => "Your account is disabled. Ask an administrator.",
        };
        return Err(PortalError::forbidden(message));
    }
    let account = state
        .store()
        .get_account(&user.account_id)
        .await?
        .ok_or_else(|| PortalError::forbidden("Your organization no longer exists."))?;
    visitor.sign_in(&state, user, account).await?;
    Ok(visitor.redirect(&next))
}

pub async fn sign_up_page(State(state): State<PortalState>, visitor: Visitor) -> Result<Response, PortalError> {
    local_accounts_on(&state)?;
    if visitor.signed_in.is_some() {
        return Ok(visitor.redirect(AFTER_SIGN_IN));
    }
    state.page(&visitor, "sign_up.html", json!({"page": "sign-up"}))
}

#[derive(Deserialize)]
pub struct SignUpForm {
    organization: String,
    #[serde(default)]
    display_name: String,
    email: String,
    password: String,
}

pub async fn sign_up(
    State(state): State<PortalState>,
    Posted { mut visitor, form }: Posted<SignUpForm>,
) -> Result<Response, PortalError> {
    local_accounts_on(&state)?;
    let store = &visitor.store(&state);
    let email = form.email.trim().to_owned();
    let refuse = |visitor: &Visitor, message: String| -> Result<Response, PortalError> {
        let context = json!({"page": "sign-up", "error": message, "organization": form.organization,
            "display_name": form.display_name, "email": form.email});
        let mut response = state.page(visitor, "sign_up.html", context)?;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        Ok(response)
    };
    let length = form.password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        return refuse(
            &visitor,
            format!("The password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters."),
        );
    }
    if store.find_user_by_email(&email).await?.is_some() {
        return refuse(&visitor, "An account with this email exists: sign in instead.".into());
    }
    if store.find_account(form.organization.trim()).await?.is_some() {
        return refuse(
            &visitor,
            format!(
                "The organization `{}` exists already: ask one of its members to add you.",
                form.organization.trim()
            ),
        );
    }
    let account = match store
        .create_account(NewAccount {
            name: form.organization.trim().to_owned(),
            description: String::new(),
        })
        .await
    {
        Ok(account) => account,
        Err(e @ maas_store::StoreError::Invalid(_)) => return refuse(&visitor, format!("Organization {e}")),
        Err(e) => return Err(e.into()),
    };
    let admin = state
        .options()
        .admin_emails
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&email));
    let password_hash = hash_password(form.password.clone()).await?;
    let created = store
        .create_user(NewUser {
            account_id: account.id.clone(),
            email,
            display_name: form.display_name.trim().to_owned(),
            role: if admin { UserRole::Admin } else { UserRole::Member },
            state: UserState::Active,
            sso: None,
            password_hash: Some(password_hash),
        })
        .await;
    let user = match created {
        Ok(user) => user,
        Err(e) => {
            // No account without its first member.
            if let Err(cleanup) = store.delete_account(&account.id).await {
                tracing::warn!(error = %cleanup, account = %account.id, "portal: sign-up left an empty account");
            }
            return match e {
                maas_store::StoreError::Invalid(_) | maas_store::StoreError::AlreadyExists { .. } => {
                    refuse(&visitor, e.to_string())
                }
                e => Err(e.into()),
            };
        }
    };
    visitor.sign_in(&state, user, account).await?;
    Ok(visitor.redirect("/models"))
}

pub async fn sign_out(
    State(state): State<PortalState>,
    Posted { mut visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let id_token = visitor.signed_in.as_ref().and_then(|s| s.id_token.clone());
    visitor.sign_out(&state).await?;
    // Signed in through the provider: sign out there too, then come back.
    let to = crate::sso::logout_url(&state, id_token.as_deref()).await;
    Ok(visitor.redirect(to.as_deref().unwrap_or("/")))
}
