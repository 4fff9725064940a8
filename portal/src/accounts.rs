//! Local accounts: sign up, sign in, sign out. Passwords are hashed with
//! Argon2id (the PHC string is stored, never the password).
//!
//! What a stranger can learn or do here is bounded:
//! - sign-in attempts are counted in the store (shared by every replica on
//!   one Redis) **before** the slow password check, so concurrent guesses
//!   cannot all run past a limit: per client network (an IPv4 address, an
//!   IPv6 /64; behind `portal.trusted_proxies`, the one `X-Forwarded-For`
//!   names), per network and email, and per email from networks it never
//!   signed in from (so guessing one account from many addresses slows
//!   down, while its owner still signs in from a known network or through
//!   company sign-in); one network's failures never block another's;
//! - password checks run a few at a time with a bounded queue
//!   ([`crate::passwords`]): a flood is told "busy", it does not exhaust
//!   the CPU;
//! - sign-up answers the same whether the email or the organization
//!   exists, is throttled per network, refuses weak passwords (zxcvbn) and
//!   oversized fields, and never makes an admin: the admin role comes
//!   from an admin, the `maas` CLI on the server, or a provider-verified
//!   email on `admin.admin_emails`.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maas_store::model::UserState;
use maas_store::{AttemptEnd, AttemptLimit, AttemptStart, LocalSignUp};
use serde::Deserialize;
use serde_json::json;

use crate::PortalState;
pub use crate::passwords::hash_password;
use crate::render::PortalError;
use crate::security::{ClientAddress, encode_query_value, network_of, safe_next};
use crate::session::{NoFields, Posted, Visitor};

const AFTER_SIGN_IN: &str = "/applications";
const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;
pub(crate) const MAX_NAME: usize = 200;
pub(crate) const MAX_EMAIL: usize = 254;
/// zxcvbn's score a password needs: 3 is "safely unguessable"
/// (10^10 guesses), what its authors suggest for online services.
const MIN_STRENGTH: u8 = 3;

/// Sign-in attempts per network and email, per network, and per email
/// from networks it never signed in from, in each [`SIGN_IN_WINDOW`];
/// sign-ups per network in each [`SIGN_UP_WINDOW`].
const MAX_FAILURES_PER_EMAIL: u64 = 10;
const MAX_FAILURES_PER_ADDRESS: u64 = 50;
const MAX_FAILURES_PER_ACCOUNT: u64 = 20;
const SIGN_IN_WINDOW: u64 = 15 * 60;
/// The index of the per-email limit among a sign-in's limits.
const ACCOUNT_LIMIT: usize = 2;
const MAX_SIGN_UPS_PER_ADDRESS: u64 = 10;
const SIGN_UP_WINDOW: u64 = 60 * 60;
/// A sign-up is answered no sooner than this after its password check
/// begins (Argon2 takes tens of milliseconds), so its timing does not
/// tell a new email from a taken one.
pub(crate) const SIGN_UP_ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

/// 429 with `Retry-After`, saying `why` in a page.
pub(crate) fn too_many(wait: u64, why: &str) -> Response {
    let mut response = PortalError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        format!("{why} Try again in {} minute(s).", wait.div_ceil(60)),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The network a client counts as (see [`network_of`]).
fn network(address: Option<std::net::IpAddr>) -> String {
    address.map_or_else(|| "unknown".to_owned(), network_of)
}

/// An email as sign-in compares it, if it could be an account's.
fn sign_in_email(typed: &str) -> Option<String> {
    let email = typed.trim();
    (email.len() <= MAX_EMAIL && maas_store::validate::is_email(email)).then(|| email.to_lowercase())
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub(crate) fn local_accounts_on(state: &PortalState) -> Result<(), PortalError> {
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
    let network = network(address);
    let email = sign_in_email(&form.email);
    let store = state.store();
    let attempt = match begin_sign_in(store, &network, email.as_deref()).await? {
        AttemptStart::Began(attempt) => attempt,
        AttemptStart::TooMany {
            limit,
            retry_after_secs,
        } => {
            let why = if limit == ACCOUNT_LIMIT {
                "Too many failed sign-ins to this account from places it never signed in from. \
                 Sign in from a device you used before, or through your company sign-in, or wait."
            } else {
                "Too many failed sign-ins from here."
            };
            return Ok(too_many(retry_after_secs, why));
        }
    };
    let user = match &email {
        Some(email) => store.find_user_by_email(email).await?,
        None => None,
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    // A password no account can have is not worth hashing (up to 2 MiB).
    let password = Some(form.password).filter(|p| p.chars().count() <= MAX_PASSWORD);
    let checked = match password {
        Some(password) => state.inner.password_checks.verify(password, hash).await,
        None => Ok(false),
    };
    let password_ok = match checked {
        Ok(ok) => ok,
        Err(busy) => {
            // Not checked: it does not count.
            store.end_attempt(attempt, AttemptEnd::Refunded).await?;
            return Ok(busy.into_response());
        }
    };
    let Some(user) = user.filter(|_| password_ok) else {
        store.end_attempt(attempt, AttemptEnd::Counted).await?;
        let sso = state.sso().map(|s| s.display_name().to_owned());
        let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(&next),
            "email": form.email.chars().take(MAX_EMAIL).collect::<String>(), "sso": sso,
            "error": "That email and password do not match an account."});
        let mut response = state.page(&visitor, "sign_in.html", context)?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    };
    store.end_attempt(attempt, AttemptEnd::Refunded).await?;
    if let Some(email) = &email {
        // As the limits key it: the address as typed, lowercased.
        store.remember_network(email, &network).await?;
    }
    if user.state != UserState::Active {
        let message = match user.state {
            UserState::Pending => "Your account waits for an administrator's approval.",
            _ => "Your account is disabled. Ask an administrator.",
        };
        return Err(PortalError::forbidden(message));
    }
    let account = store
        .get_account(&user.account_id)
        .await?
        .ok_or_else(|| PortalError::forbidden("Your organization no longer exists."))?;
    visitor.sign_in(&state, user, account).await?;
    Ok(visitor.redirect(&next))
}

/// Begins a sign-in attempt from `network` for `email` (`None`: not an
/// address any account can have), against the limits per network and
/// email, per network and, unless the email signed in from this network
/// before, per email (at [`ACCOUNT_LIMIT`]).
async fn begin_sign_in(
    store: &maas_store::Store,
    network: &str,
    email: Option<&str>,
) -> Result<AttemptStart, PortalError> {
    let mut limits = vec![
        AttemptLimit::new(&["sign-in from", network, email.unwrap_or("")], MAX_FAILURES_PER_EMAIL),
        AttemptLimit::new(&["sign-in from", network], MAX_FAILURES_PER_ADDRESS),
    ];
    if let Some(email) = email
        && !store.knows_network(email, network).await?
    {
        limits.push(AttemptLimit::new(&["sign-in to", email], MAX_FAILURES_PER_ACCOUNT));
    }
    Ok(store.begin_attempt(&limits, SIGN_IN_WINDOW).await?)
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
    if organization.is_empty() || organization.chars().count() > MAX_NAME || organization.chars().any(char::is_control)
    {
        problems.push(format!(
            "Organization: 1 to {MAX_NAME} characters, no control characters."
        ));
    }
    problems.extend(person_problems(
        &form.display_name,
        &form.email,
        &form.password,
        &[organization],
    ));
    problems
}

/// What is wrong with a new person's name, email and password (`words`:
/// more that a guesser would try), decided from the form alone.
pub(crate) fn person_problems(display_name: &str, email: &str, password: &str, words: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let chars = |text: &str| text.chars().count();
    if chars(display_name.trim()) > MAX_NAME || display_name.chars().any(char::is_control) {
        problems.push(format!(
            "Your name: at most {MAX_NAME} characters, no control characters."
        ));
    }
    let email = email.trim();
    if email.len() > MAX_EMAIL || !maas_store::validate::is_email(email) {
        problems.push(format!("Email: a valid address of at most {MAX_EMAIL} characters."));
    }
    let mut inputs = vec![email, display_name.trim()];
    inputs.extend_from_slice(words);
    problems.extend(password_problem(password, &inputs));
    problems
}

/// What is wrong with a new password, if anything: its length, or how
/// easy it is to guess with `words` (the person's name, email, …).
pub(crate) fn password_problem(password: &str, words: &[&str]) -> Option<String> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        Some(format!("Password: {MIN_PASSWORD} to {MAX_PASSWORD} characters."))
    } else {
        password_weakness(password, words).map(|weakness| format!("Password: {weakness}"))
    }
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
    let answer_at = tokio::time::Instant::now() + SIGN_UP_ANSWER_FLOOR;
    let password_hash = match counted_password_hash(&state, address, form.password.clone()).await? {
        Ok(hash) => hash,
        Err(refused) => return Ok(refused),
    };
    let email = form.email.trim().to_owned();
    // One conditional write whether or not the email has an account: the
    // same work, the same answer.
    let sign_up = LocalSignUp {
        organization: form.organization.trim().to_owned(),
        display_name: form.display_name.trim().to_owned(),
        email: email.clone(),
        password_hash,
    };
    visitor.store(&state).sign_up(sign_up).await?;
    // What differs between a new and a taken email (the write, and what
    // other processes do with the change it publishes) stays below this.
    tokio::time::sleep_until(answer_at).await;
    // The same answer whether the email was new or not.
    // New accounts start at the models, to pick one.
    let context = json!({"page": "sign-in", "next": "/models", "next_encoded": encode_query_value("/models"),
        "email": email, "sso": state.sso().map(|s| s.display_name().to_owned()),
        "notice": "Thank you. If this email had no account here, it has one now: sign in with your password. \
                   If it had one, sign in with that account's password."});
    state.page(&visitor, "sign_in.html", context)
}

/// Counts a new account from `address` against the sign-up limit, then
/// hashes `password` (as long whether or not an account is made); the
/// answer to send instead when too many came from there or the password
/// checks are busy.
pub(crate) async fn counted_password_hash(
    state: &PortalState,
    address: Option<std::net::IpAddr>,
    password: String,
) -> Result<Result<String, Response>, PortalError> {
    let limits = [AttemptLimit::new(
        &["sign-up from", &network(address)],
        MAX_SIGN_UPS_PER_ADDRESS,
    )];
    let attempt = match state.store().begin_attempt(&limits, SIGN_UP_WINDOW).await? {
        AttemptStart::Began(attempt) => attempt,
        AttemptStart::TooMany { retry_after_secs, .. } => {
            return Ok(Err(too_many(retry_after_secs, "Too many sign-ups from here.")));
        }
    };
    match state.inner.password_checks.hash(password).await {
        Ok(hashed) => {
            state.store().end_attempt(attempt, AttemptEnd::Counted).await?;
            Ok(Ok(hashed?))
        }
        Err(busy) => {
            state.store().end_attempt(attempt, AttemptEnd::Refunded).await?;
            Ok(Err(busy.into_response()))
        }
    }
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
