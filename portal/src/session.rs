//! Who is asking: the session behind the cookie, and the CSRF token every
//! state-changing form must carry.
//!
//! A session id is 32 random bytes in the `maas_session` cookie; the store
//! keeps the session under the id's SHA-256 ([`maas_store::SessionRecord`])
//! with a TTL, so every portal replica sees it and a copy of the store
//! hands out none. Signing in always starts a new session (a new id), so
//! an id planted before sign-in is worth nothing after. Before sign-in,
//! forms use a double-submit token: a random `maas_csrf` cookie the form
//! must repeat.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maas_admin_api::auth::constant_time_eq;
pub use maas_admin_api::auth::cookie;
use maas_admin_api::{SESSION_COOKIE, SESSION_CSRF_FIELD};
use maas_store::SessionRecord;
use maas_store::ids::{hex, random_bytes};
use maas_store::model::{Account, User, UserRole, UserState};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::render::PortalError;
use crate::{PortalOptions, PortalState};

/// The double-submit CSRF cookie of visitors who are not signed in.
pub const CSRF_COOKIE: &str = "maas_csrf";

/// A signed-in user and their session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session_id: String,
    pub user: User,
    pub account: Account,
    /// The provider's ID token, for its logout, when signed in through SSO.
    pub id_token: Option<String>,
}

impl SignedIn {
    pub fn is_admin(&self) -> bool {
        self.user.role == UserRole::Admin
    }
}

/// Anyone asking for a page: signed in or not, with their CSRF token.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub signed_in: Option<SignedIn>,
    /// The client's address, for the audit log.
    pub ip: Option<String>,
    /// The browser's `User-Agent`, to list the user's sessions by.
    pub user_agent: String,
    csrf: String,
    /// Cookies to send with the answer.
    set_cookies: Vec<String>,
}

/// A new random token: 32 bytes as 64 hex digits.
pub fn random_token() -> String {
    hex(&random_bytes::<32>())
}

fn is_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `Set-Cookie` text with the portal's flags.
pub fn cookie_header(options: &PortalOptions, name: &str, value: &str, max_age: Option<i64>) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if options.secure_cookies {
        text.push_str("; Secure");
    }
    text
}

impl Visitor {
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// The store acting as this visitor, so the audit log names who changed
    /// what, and from where.
    pub fn store(&self, state: &PortalState) -> maas_store::Store {
        let actor = match &self.signed_in {
            Some(s) => maas_store::Actor::new("user", &s.user.id, self.ip.clone()),
            None => maas_store::Actor::new("portal", "anonymous", self.ip.clone()),
        };
        state.store().as_actor(actor)
    }

    /// What templates show of the user (`null` when not signed in).
    pub fn user_context(&self) -> Value {
        match &self.signed_in {
            None => Value::Null,
            Some(s) => json!({
                "name": if s.user.display_name.is_empty() { &s.user.email } else { &s.user.display_name },
                "email": s.user.email,
                "account": s.account.shown_name(),
                "is_admin": s.is_admin(),
            }),
        }
    }

    /// Adds a cookie to the answer.
    pub fn set_cookie(&mut self, text: String) {
        self.set_cookies.push(text);
    }

    /// Writes the cookies added so far into an answer's headers.
    pub fn write_cookies(&self, headers: &mut HeaderMap) {
        for text in &self.set_cookies {
            if let Ok(value) = HeaderValue::from_str(text) {
                headers.append(header::SET_COOKIE, value);
            }
        }
    }

    /// A redirect carrying the visitor's new cookies.
    pub fn redirect(&self, to: &str) -> Response {
        let mut response = Redirect::to(to).into_response();
        self.write_cookies(response.headers_mut());
        response
    }

    /// Starts a new session for `user`, replacing any current one.
    pub async fn sign_in(&mut self, state: &PortalState, user: User, account: Account) -> Result<(), PortalError> {
        self.sign_in_with(state, user, account, serde_json::Map::new()).await
    }

    /// [`sign_in`](Visitor::sign_in), keeping `extra` in the session.
    pub async fn sign_in_with(
        &mut self,
        state: &PortalState,
        user: User,
        account: Account,
        extra: serde_json::Map<String, Value>,
    ) -> Result<(), PortalError> {
        if let Some(old) = self.signed_in.take() {
            state.store().delete_session(&old.session_id).await?;
        }
        let id = random_token();
        let csrf = random_token();
        let id_token = extra.get("id_token").and_then(Value::as_str).map(str::to_owned);
        let mut record = SessionRecord::signed_in(&user, extra);
        record.data.insert(SESSION_CSRF_FIELD.into(), json!(csrf));
        let ttl = i64::try_from(state.options().session_ttl.as_secs()).unwrap_or(i64::MAX);
        let store = state.store();
        store.put_session(&id, &record, time::Duration::seconds(ttl)).await?;
        store
            .list_session(
                &user,
                &id,
                self.ip.clone(),
                &self.user_agent,
                time::Duration::seconds(ttl),
            )
            .await?;
        let options = state.options();
        self.set_cookie(cookie_header(options, SESSION_COOKIE, &id, Some(ttl)));
        self.set_cookie(cookie_header(options, CSRF_COOKIE, "", Some(0)));
        self.csrf = csrf;
        self.signed_in = Some(SignedIn {
            session_id: id,
            user,
            account,
            id_token,
        });
        Ok(())
    }

    /// Ends the session, here and in the store.
    pub async fn sign_out(&mut self, state: &PortalState) -> Result<(), PortalError> {
        if let Some(old) = self.signed_in.take() {
            state.store().delete_session(&old.session_id).await?;
        }
        self.set_cookie(cookie_header(state.options(), SESSION_COOKIE, "", Some(0)));
        Ok(())
    }
}

impl FromRequestParts<PortalState> for Visitor {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<Visitor, PortalError> {
        let ip = crate::security::client_address(parts, state.trusted_proxies()).map(|a| a.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let mut visitor = Visitor {
            signed_in: None,
            ip,
            user_agent,
            csrf: String::new(),
            set_cookies: Vec::new(),
        };
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE).filter(|id| is_token(id)) {
            match session_user(state, id).await? {
                Some((signed_in, csrf)) => {
                    visitor.csrf = csrf;
                    visitor.signed_in = Some(signed_in);
                    return Ok(visitor);
                }
                None => visitor.set_cookie(cookie_header(state.options(), SESSION_COOKIE, "", Some(0))),
            }
        }
        match cookie(&parts.headers, CSRF_COOKIE).filter(|t| is_token(t)) {
            Some(token) => visitor.csrf = token.to_owned(),
            None => {
                visitor.csrf = random_token();
                let text = cookie_header(state.options(), CSRF_COOKIE, &visitor.csrf, None);
                visitor.set_cookie(text);
            }
        }
        Ok(visitor)
    }
}

/// The active user of session `id` and the session's CSRF token.
async fn session_user(state: &PortalState, id: &str) -> Result<Option<(SignedIn, String)>, PortalError> {
    let store = state.store();
    let Some((record, user)) = store.session_with_user(id).await? else {
        return Ok(None);
    };
    if user.state != UserState::Active {
        return Ok(None);
    }
    let Some(account) = store.get_account(&user.account_id).await? else {
        return Ok(None);
    };
    let csrf = record
        .data
        .get(SESSION_CSRF_FIELD)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let id_token = record.data.get("id_token").and_then(Value::as_str).map(str::to_owned);
    let signed_in = SignedIn {
        session_id: id.to_owned(),
        user,
        account,
        id_token,
    };
    Ok(Some((signed_in, csrf)))
}

/// A signed-in visitor; anyone else is sent to sign in and brought back.
pub struct Developer(pub Visitor);

impl Developer {
    pub fn session(&self) -> &SignedIn {
        self.0.signed_in.as_ref().expect("a Developer is signed in")
    }
}

impl FromRequestParts<PortalState> for Developer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<Developer, Response> {
        let visitor = Visitor::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if visitor.signed_in.is_some() {
            return Ok(Developer(visitor));
        }
        let here = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let to = format!("/sign-in?next={}", crate::security::encode_query_value(here));
        Err(visitor.redirect(&to))
    }
}

/// A form with nothing but its CSRF token (sign out, approve, …).
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

/// A posted form whose `csrf` field matched the visitor's token, with the
/// visitor who posted it. `T` names only the form's own fields.
pub struct Posted<T> {
    pub visitor: Visitor,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<PortalState> for Posted<T> {
    type Rejection = PortalError;

    async fn from_request(request: Request, state: &PortalState) -> Result<Posted<T>, PortalError> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let form_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(PortalError::bad_request(
                "Send the form as a browser does (a URL-encoded form).",
            ));
        }
        let request = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| PortalError::bad_request(format!("The form could not be read: {}", e.body_text())))?;
        // The token first: a form without it is forbidden, whatever else it lacks.
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let given = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
        let expected = visitor.csrf_token();
        if expected.is_empty() || !given.is_some_and(|given| constant_time_eq(given, expected)) {
            return Err(PortalError::forbidden(
                "This form expired or did not come from this portal. Go back, reload the page and try again.",
            ));
        }
        let form: T = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PortalError::bad_request(format!("The form could not be read: {e}")))?;
        Ok(Posted { visitor, form })
    }
}
