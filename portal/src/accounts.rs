//! Local accounts: sign up, sign in, sign out. Passwords are hashed with
//! Argon2id (the PHC string is stored, never the password).
//!
//! What a stranger can learn or do here is bounded:
//! - attempts are counted per client address (behind
//!   `portal.trusted_proxies`, the one `X-Forwarded-For` names) **before**
//!   the slow password check, so concurrent guesses cannot all run past
//!   the limit, and one address's failures never block another's;
//! - sign-up answers the same whether the email or the organization
//!   exists, is throttled per address, refuses weak passwords (zxcvbn) and
//!   oversized fields, and never makes an admin: the admin role comes
//!   from an admin, the `maas` CLI on the server, or a provider-verified
//!   email on `admin.admin_emails`.

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
use maas_store::{NewAccount, NewUser, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::PortalState;
use crate::render::PortalError;
use crate::security::{ClientAddress, encode_query_value, safe_next};
use crate::session::{NoFields, Posted, Visitor};

const AFTER_SIGN_IN: &str = "/applications";
const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;
const MAX_NAME: usize = 200;
const MAX_EMAIL: usize = 254;
/// zxcvbn's score a password needs: 3 is "safely unguessable"
/// (10^10 guesses), what its authors suggest for online services.
const MIN_STRENGTH: u8 = 3;

/// Sign-in attempts allowed per key (an address, or an address and email)
/// in [`SIGN_IN_WINDOW`]; sign-ups per address in [`SIGN_UP_WINDOW`].
const MAX_FAILURES_PER_EMAIL: u32 = 10;
const MAX_FAILURES_PER_ADDRESS: u32 = 50;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_SIGN_UPS_PER_ADDRESS: u32 = 10;
const SIGN_UP_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Counts attempts per key in this replica (each replica counts its own,
/// so N replicas allow N times as many; Argon2 keeps each one slow). An
/// attempt is counted when it begins.
pub struct AttemptLimiter {
    window: Duration,
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl AttemptLimiter {
    pub fn new(window: Duration) -> AttemptLimiter {
        AttemptLimiter {
            window,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt against every key, or, if any key is at its
    /// limit, counts none and says how many seconds until it may try again.
    fn begin(&self, keys: &[(String, u32)]) -> Result<(), u64> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.len() > 100_000 {
            attempts.retain(|_, (_, since)| since.elapsed() < self.window);
        }
        let wait = keys
            .iter()
            .filter_map(|(key, max)| {
                let (count, since) = attempts.get(key)?;
                let left = self.window.checked_sub(since.elapsed())?;
                (count >= max).then(|| left.as_secs().max(1))
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for (key, _) in keys {
            let entry = attempts.entry(key.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= self.window {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
        Ok(())
    }

    /// A successful attempt: `reset` starts over, `refund` gets its count back.
    fn succeeded(&self, reset: &str, refund: &str) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.remove(reset);
        if let Some((count, _)) = attempts.get_mut(refund) {
            *count = count.saturating_sub(1);
        }
    }
}

pub(crate) fn sign_in_limiter() -> AttemptLimiter {
    AttemptLimiter::new(SIGN_IN_WINDOW)
}

pub(crate) fn sign_up_limiter() -> AttemptLimiter {
    AttemptLimiter::new(SIGN_UP_WINDOW)
}

fn too_many(wait: u64, what: &str) -> Response {
    let mut response = PortalError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        format!(
            "Too many {what} from here. Try again in {} minute(s).",
            wait.div_ceil(60)
        ),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
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
    if let Err(wait) = limiter.begin(&keys) {
        return Ok(too_many(wait, "failed sign-ins"));
    }
    let user = state.store().find_user_by_email(&email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = verify_password(form.password, hash).await;
    let Some(user) = user.filter(|_| password_ok) else {
        let sso = state.sso().map(|s| s.display_name().to_owned());
        let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(&next),
            "email": form.email, "sso": sso,
            "error": "That email and password do not match an account."});
        let mut response = state.page(&visitor, "sign_in.html", context)?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    };
    limiter.succeeded(&keys[0].0, &keys[1].0);
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

/// What is wrong with a sign-up, every field at once, decided from the
/// form alone (never from what exists).
fn sign_up_problems(form: &SignUpForm) -> Vec<String> {
    let mut problems = Vec::new();
    let organization = form.organization.trim();
    let chars = |text: &str| text.chars().count();
    if organization.is_empty() || chars(organization) > MAX_NAME || organization.chars().any(char::is_control) {
        problems.push(format!(
            "Organization: 1 to {MAX_NAME} characters, no control characters."
        ));
    }
    if chars(form.display_name.trim()) > MAX_NAME || form.display_name.chars().any(char::is_control) {
        problems.push(format!(
            "Your name: at most {MAX_NAME} characters, no control characters."
        ));
    }
    let email = form.email.trim();
    if email.len() > MAX_EMAIL || !maas_store::validate::is_email(email) {
        problems.push(format!("Email: a valid address of at most {MAX_EMAIL} characters."));
    }
    let length = chars(&form.password);
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        problems.push(format!("Password: {MIN_PASSWORD} to {MAX_PASSWORD} characters."));
    } else if let Some(weakness) = password_weakness(&form.password, &[email, organization, form.display_name.trim()]) {
        problems.push(format!("Password: {weakness}"));
    }
    problems
}

/// Why `password` is too easy to guess, if it is (zxcvbn, with the other
/// fields as words a guesser would try). Only the first 100 characters
/// are scored: longer passwords are long enough, and the estimate's cost
/// grows with length.
pub fn password_weakness(password: &str, user_inputs: &[&str]) -> Option<String> {
    let scored: String = password.chars().take(100).collect();
    let estimate = zxcvbn::zxcvbn(&scored, user_inputs);
    if estimate.score() as u8 >= MIN_STRENGTH {
        return None;
    }
    let mut reason = String::from("it is too easy to guess.");
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reason = format!("{warning}.");
        }
        for suggestion in feedback.suggestions() {
            reason.push(' ');
            reason.push_str(&suggestion.to_string());
        }
    }
    Some(reason)
}

pub async fn sign_up(
    State(state): State<PortalState>,
    ClientAddress(address): ClientAddress,
    Posted { visitor, form }: Posted<SignUpForm>,
) -> Result<Response, PortalError> {
    local_accounts_on(&state)?;
    let problems = sign_up_problems(&form);
    if !problems.is_empty() {
        let context = json!({"page": "sign-up", "error": "The account was not created:", "problems": problems,
            "organization": form.organization.chars().take(MAX_NAME).collect::<String>(),
            "display_name": form.display_name.chars().take(MAX_NAME).collect::<String>(),
            "email": form.email.chars().take(MAX_EMAIL).collect::<String>()});
        let mut response = state.page(&visitor, "sign_up.html", context)?;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(response);
    }
    let ip = address.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    if let Err(wait) = state.inner.sign_up_limiter.begin(&[(ip, MAX_SIGN_UPS_PER_ADDRESS)]) {
        return Ok(too_many(wait, "sign-ups"));
    }
    let email = form.email.trim().to_owned();
    // Hashed whether or not the account is made: both answers take as long.
    let password_hash = hash_password(form.password.clone()).await?;
    create_local_account(&visitor.store(&state), &form, &email, password_hash).await?;
    // The same answer whether the email was new or not.
    // New accounts start at the models, to pick one.
    let context = json!({"page": "sign-in", "next": "/models", "next_encoded": encode_query_value("/models"),
        "email": email, "sso": state.sso().map(|s| s.display_name().to_owned()),
        "notice": "Thank you. If this email had no account here, it has one now: sign in with your password. \
                   If it had one, sign in with that account's password."});
    state.page(&visitor, "sign_in.html", context)
}

/// A new organization (named as asked, or `name (2)`… when taken) and its
/// first member, unless the email has an account already.
async fn create_local_account(
    store: &maas_store::Store,
    form: &SignUpForm,
    email: &str,
    password_hash: String,
) -> Result<(), PortalError> {
    if store.find_user_by_email(email).await?.is_some() {
        return Ok(());
    }
    let account = store
        .create_account_with_free_name(NewAccount {
            name: form.organization.trim().to_owned(),
            description: String::new(),
            sso: None,
        })
        .await?;
    let created = store
        .create_user(NewUser {
            account_id: account.id.clone(),
            email: email.to_owned(),
            display_name: form.display_name.trim().to_owned(),
            role: UserRole::Member,
            state: UserState::Active,
            sso: None,
            password_hash: Some(password_hash),
            // Nobody checked that the address is the visitor's.
            email_verified: false,
        })
        .await;
    if let Err(error) = created {
        // No account without its first member.
        if let Err(cleanup) = store.delete_account(&account.id).await {
            tracing::warn!(error = %cleanup, account = %account.id, "portal: sign-up left an empty account");
        }
        return match error {
            // The same email signed up at the same moment: as if it existed.
            StoreError::AlreadyExists { .. } => Ok(()),
            error => Err(error.into()),
        };
    }
    Ok(())
}

pub async fn sign_out(
    State(state): State<PortalState>,
    Posted { mut visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let id_token = visitor.signed_in.as_ref().and_then(|s| s.id_token.clone());
    visitor.sign_out(&state).await?;
    // Signed in through the provider: sign out there too, then come back.
    match crate::sso::logout_url(&state, id_token.as_deref()).await {
        Some((to, expected)) => {
            let cookie =
                crate::session::cookie_header(state.options(), crate::sso::SIGN_OUT_COOKIE, &expected, Some(600));
            visitor.set_cookie(cookie);
            Ok(visitor.redirect(&to))
        }
        None => Ok(visitor.redirect("/")),
    }
}
