//! Sign-in through the company's OpenID provider (Keycloak, Red Hat SSO,
//! any OIDC issuer): the authorization-code flow with PKCE, `state` and
//! `nonce`, the ID token checked against the provider's keys (JWKS, from
//! discovery), claims mapped to the account, the name and the admin role,
//! and RP-initiated logout.
//!
//! The flow's secrets (PKCE verifier, state, nonce, where to go after) are
//! kept in the store for 10 minutes under a random id in the `maas_sso`
//! cookie, so any portal replica can finish a sign-in another one started,
//! and each can be used once.

use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::Response;
use maas_store::SessionRecord;
use maas_store::model::SsoIdentity;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::RwLock;

use crate::PortalState;
use crate::render::PortalError;
use crate::security::{encode_query_value, safe_next};
use crate::session::{Visitor, cookie, cookie_header, random_token};

mod membership;

/// The cookie naming a sign-in in progress.
pub const FLOW_COOKIE: &str = "maas_sso";
/// The cookie holding the `state` of a sign-out at the provider, checked
/// when the provider sends the browser back.
pub const SIGN_OUT_COOKIE: &str = "maas_sso_out";
const FLOW_TTL: time::Duration = time::Duration::minutes(10);
/// Provider metadata and keys are fetched again after this long, or at
/// once when a token does not verify (keys rotate).
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The provider and how its claims map (`sso` in `maas.yaml`).
#[derive(Debug, Clone)]
pub struct SsoOptions {
    /// Shown on the sign-in button.
    pub display_name: String,
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    /// The claim naming the user's organization (fallback: the email).
    pub account_claim: String,
    /// A claim and value that make a user an admin (`groups` / `maas-admins`).
    pub admin_claim: Option<String>,
    pub admin_value: Option<String>,
    /// New users may sign in at once; else they wait for an admin.
    pub auto_approve: bool,
    /// How the client authenticates at the token endpoint.
    pub token_auth: TokenAuth,
    /// What a sign-in does when the provider names another organization
    /// than the one the user's account is bound to.
    pub organization_change: OrganizationChange,
}

/// `sso.organization_change`: the provider moved a user to another
/// organization since their last sign-in. Either way the user's sessions
/// in the old account end and the audit log says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrganizationChange {
    /// The user joins the new organization's account.
    #[default]
    Move,
    /// The sign-in is refused until an administrator moves the user.
    Refuse,
}

/// How the portal presents its client secret at the token endpoint
/// (`sso.token_auth_method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenAuth {
    /// `client_secret_basic` unless the provider's discovery document
    /// lists only `client_secret_post`.
    #[default]
    Auto,
    /// HTTP Basic (`client_secret_basic`), OAuth's default.
    Basic,
    /// In the form body (`client_secret_post`).
    Post,
}

/// An ID token with its [`ExtraClaims`].
type ExtraIdToken = openidconnect::IdToken<
    ExtraClaims,
    CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJwsSigningAlgorithm,
>;

/// Claims beyond the standard ones (organization, groups, roles).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct ExtraClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for ExtraClaims {}

#[derive(Clone)]
struct Discovered {
    metadata: CoreProviderMetadata,
    end_session_endpoint: Option<String>,
    /// The provider takes the secret only in the form body.
    post_only: bool,
    at: Instant,
}

pub struct Sso {
    options: SsoOptions,
    http: Http,
    discovered: RwLock<Option<Discovered>>,
}

#[derive(Debug)]
struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// The provider's HTTP client as `openidconnect` calls it (a named type
/// with a boxed `Send` future: the handlers run on a multi-threaded runtime).
#[derive(Clone)]
struct Http(reqwest::Client);

type HttpFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

/// One HTTP exchange with the provider.
async fn send(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(e.to_string()))?;
    let mut answer = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let body = response.bytes().await.map_err(|e| HttpError(e.to_string()))?;
    answer.body(body.to_vec()).map_err(|e| HttpError(e.to_string()))
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> PortalError {
    tracing::warn!(%error, "portal: SSO {what}");
    PortalError::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "Sign-in is unavailable",
        format!("The company sign-in could not be reached ({what}). Try again in a minute."),
    )
}

fn refused(message: impl Into<String>) -> PortalError {
    PortalError::new(axum::http::StatusCode::FORBIDDEN, "Sign-in refused", message)
}

impl Sso {
    pub fn new(options: SsoOptions) -> Sso {
        let http = reqwest::Client::builder()
            // Following redirects from the token endpoint opens SSRF holes.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let http = Http(http);
        Sso {
            options,
            http,
            discovered: RwLock::new(None),
        }
    }

    pub fn display_name(&self) -> &str {
        &self.options.display_name
    }

    async fn discover(&self, fresh: bool) -> Result<Discovered, PortalError> {
        if !fresh
            && let Some(d) = self.discovered.read().await.as_ref()
            && d.at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d.clone());
        }
        let issuer = IssuerUrl::new(self.options.issuer_url.clone()).map_err(|e| unavailable("issuer URL", e))?;
        let metadata = match CoreProviderMetadata::discover_async(issuer, &self.http).await {
            Ok(metadata) => metadata,
            Err(error) => return Err(self.discovery_failed(error).await),
        };
        // RP-initiated logout is not in the core metadata.
        let well_known = format!(
            "{}/.well-known/openid-configuration",
            self.options.issuer_url.trim_end_matches('/')
        );
        let document = match self.http.0.get(&well_known).send().await {
            Ok(response) => response.json::<Value>().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let end_session_endpoint = document["end_session_endpoint"].as_str().map(str::to_owned);
        let methods: Vec<&str> = document["token_endpoint_auth_methods_supported"]
            .as_array()
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let post_only = methods.contains(&"client_secret_post") && !methods.contains(&"client_secret_basic");
        let discovered = Discovered {
            metadata,
            end_session_endpoint,
            post_only,
            at: Instant::now(),
        };
        *self.discovered.write().await = Some(discovered.clone());
        Ok(discovered)
    }

    fn client(
        &self,
        discovered: &Discovered,
        public_url: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        PortalError,
    > {
        let redirect = RedirectUrl::new(format!("{}/sso/callback", public_url.trim_end_matches('/')))
            .map_err(|e| unavailable("redirect URL", e))?;
        let in_body = match self.options.token_auth {
            TokenAuth::Post => true,
            TokenAuth::Basic => false,
            TokenAuth::Auto => discovered.post_only,
        };
        let auth_type = if in_body {
            openidconnect::AuthType::RequestBody
        } else {
            openidconnect::AuthType::BasicAuth
        };
        Ok(CoreClient::from_provider_metadata(
            discovered.metadata.clone(),
            ClientId::new(self.options.client_id.clone()),
            self.options.client_secret.clone().map(ClientSecret::new),
        )
        .set_auth_type(auth_type)
        .set_redirect_uri(redirect))
    }

    /// Why discovery failed, in terms the operator can act on: most often
    /// an issuer configured with or without a trailing slash that the
    /// provider's document spells the other way.
    async fn discovery_failed(&self, error: impl std::fmt::Display) -> PortalError {
        let configured = &self.options.issuer_url;
        let well_known = format!("{}/.well-known/openid-configuration", configured.trim_end_matches('/'));
        let announced = match self.http.0.get(&well_known).send().await {
            Ok(response) => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["issuer"].as_str().map(str::to_owned)),
            Err(_) => None,
        };
        match announced {
            Some(issuer)
                if issuer != *configured && issuer.trim_end_matches('/') == configured.trim_end_matches('/') =>
            {
                tracing::error!(
                    configured = %configured,
                    announced = %issuer,
                    "portal: sso.issuer_url differs from the provider's issuer only by a trailing slash; set it to exactly `{issuer}`"
                );
                PortalError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    "Sign-in is misconfigured",
                    format!(
                        "The company sign-in's issuer is `{issuer}`, but the portal is configured with `{configured}` \
                         (they differ by a trailing slash, and OpenID Connect compares them exactly). \
                         An administrator must set sso.issuer_url to `{issuer}`."
                    ),
                )
            }
            Some(issuer) if issuer != *configured => {
                tracing::error!(configured = %configured, announced = %issuer, "portal: sso.issuer_url is not the provider's issuer");
                PortalError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    "Sign-in is misconfigured",
                    format!(
                        "The company sign-in announces the issuer `{issuer}`, not the configured `{configured}`; \
                         an administrator must set sso.issuer_url to it."
                    ),
                )
            }
            _ => unavailable("discovery", error),
        }
    }

    /// Where to send the browser to sign in, and the flow to remember.
    async fn start(&self, public_url: &str, next: &str) -> Result<(String, SessionRecord), PortalError> {
        let discovered = self.discover(false).await?;
        let client = self.client(&discovered, public_url)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.options.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let mut record = SessionRecord {
            user_id: None,
            created_at: time::OffsetDateTime::now_utc(),
            data: Map::new(),
            user_epoch: 0,
        };
        for (key, value) in [
            ("state", state.secret().as_str()),
            ("nonce", nonce.secret().as_str()),
            ("verifier", verifier.secret().as_str()),
            ("next", next),
        ] {
            record.data.insert(key.into(), json!(value));
        }
        Ok((url.to_string(), record))
    }

    /// Exchanges `code` and returns the verified identity and claims.
    async fn finish(&self, public_url: &str, flow: &SessionRecord, code: String) -> Result<Identity, PortalError> {
        let field = |name: &str| {
            flow.data
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let discovered = self.discover(false).await?;
        let client = self.client(&discovered, public_url)?;
        let http = &self.http;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| unavailable("token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(field("verifier")))
            .request_async(http)
            .await
            .map_err(|e| refused(format!("The provider did not accept the sign-in: {e}")))?;
        // Read again with its additional claims: the organization may be
        // there when the userinfo endpoint fails.
        let id_token: ExtraIdToken = token
            .id_token()
            .ok_or_else(|| refused("The provider sent no ID token."))?
            .to_string()
            .parse()
            .map_err(|e| refused(format!("The ID token is not valid: {e}")))?;
        let nonce = Nonce::new(field("nonce"));
        let verifies = id_token.claims(&client.id_token_verifier(), &nonce).is_ok();
        let client = if verifies {
            client
        } else {
            // Perhaps signed with a key the cached JWKS lacks: fetch them again.
            self.client(&self.discover(true).await?, public_url)?
        };
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &nonce)
            .map_err(|e| refused(format!("The ID token is not valid: {e}")))?;
        if let Some(expected) = claims.access_token_hash() {
            let algorithm = id_token.signing_alg().map_err(|e| refused(e.to_string()))?;
            let key = id_token.signing_key(&verifier).map_err(|e| refused(e.to_string()))?;
            let actual = AccessTokenHash::from_token(token.access_token(), algorithm, key)
                .map_err(|e| refused(e.to_string()))?;
            if actual != *expected {
                return Err(refused("The access token does not match the ID token."));
            }
        }
        let mut extra = claims.additional_claims().claims.clone();
        let from_id_token = claims
            .email()
            .map(|e| (e.to_string(), claims.email_verified().unwrap_or(false)));
        let mut from_userinfo = None;
        let mut name = claims.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        let mut userinfo_answered = false;
        if let Ok(request) = client.user_info(token.access_token().clone(), Some(claims.subject().clone())) {
            let info: Result<UserInfoClaims<ExtraClaims, CoreGenderClaim>, _> = request.request_async(http).await;
            match info {
                Ok(info) => {
                    userinfo_answered = true;
                    // Userinfo is the fresher of the two; the ID token's
                    // claims stay for what it does not say.
                    extra.extend(info.additional_claims().claims.clone());
                    from_userinfo = info
                        .email()
                        .map(|e| (e.to_string(), info.email_verified().unwrap_or(false)));
                    name = name.or_else(|| info.name().and_then(|n| n.get(None)).map(|n| n.to_string()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "portal: the userinfo endpoint failed; using the ID token's claims")
                }
            }
        }
        // An address is verified by what its own source says of it: one
        // source's flag never vouches for the other's address (the ID
        // token's comes first; both may vouch when they name the same one).
        let (email, email_verified) = match (from_id_token, from_userinfo) {
            (Some((email, by_token)), Some((same, by_userinfo))) if email.eq_ignore_ascii_case(&same) => {
                (Some(email), by_token || by_userinfo)
            }
            (Some((email, verified)), _) | (None, Some((email, verified))) => (Some(email), verified),
            (None, None) => (None, false),
        };
        Ok(Identity {
            sso: SsoIdentity {
                issuer: claims.issuer().to_string(),
                subject: claims.subject().to_string(),
            },
            email,
            email_verified,
            name,
            extra,
            userinfo_answered,
            id_token: id_token.to_string(),
        })
    }

    /// The provider's logout URL for a session signed in with `id_token`,
    /// carrying `state`, which the provider sends back with the browser.
    async fn logout_url(&self, public_url: &str, id_token: &str, state: &str) -> Option<String> {
        let discovered = self.discover(false).await.ok()?;
        let endpoint = discovered.end_session_endpoint?;
        let back = format!("{}/", public_url.trim_end_matches('/'));
        Some(format!(
            "{endpoint}{}id_token_hint={}&post_logout_redirect_uri={}&client_id={}&state={}",
            if endpoint.contains('?') { "&" } else { "?" },
            encode_query_value(id_token),
            encode_query_value(&back),
            encode_query_value(&self.options.client_id),
            encode_query_value(state)
        ))
    }
}

/// Who the provider says signed in.
struct Identity {
    sso: SsoIdentity,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    extra: Map<String, Value>,
    /// The userinfo endpoint answered, so `extra` holds every claim the
    /// provider has for the user: a missing organization claim means none.
    userinfo_answered: bool,
    id_token: String,
}

impl Identity {
    /// A claim as text (a string claim, or the first of an array).
    fn text(&self, claim: &str) -> Option<String> {
        match self.extra.get(claim)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Array(items) => items.iter().find_map(|v| v.as_str()).map(str::to_owned),
            _ => None,
        }
    }

    /// Whether `claim` is `value` or a list holding it (Keycloak groups may
    /// come as `/maas-admins`).
    fn has(&self, claim: &str, value: &str) -> bool {
        let matches = |v: &Value| {
            v.as_str()
                .is_some_and(|s| s == value || s.trim_start_matches('/') == value)
        };
        match self.extra.get(claim) {
            Some(Value::Array(items)) => items.iter().any(matches),
            Some(other) => matches(other),
            None => false,
        }
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login(
    State(state): State<PortalState>,
    mut visitor: Visitor,
    Query(query): Query<LoginQuery>,
) -> Result<Response, PortalError> {
    let sso = state
        .sso()
        .ok_or_else(|| PortalError::not_found("Company sign-in is not configured here."))?;
    let next = safe_next(query.next.as_deref(), "/applications");
    let (url, flow) = sso.start(&state.options().public_url, next).await?;
    let id = random_token();
    state.store().put_session(&id, &flow, FLOW_TTL).await?;
    let secs = FLOW_TTL.whole_seconds();
    visitor.set_cookie(cookie_header(state.options(), FLOW_COOKIE, &id, Some(secs)));
    Ok(visitor.redirect(&url))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<PortalState>,
    mut visitor: Visitor,
    headers: axum::http::HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, PortalError> {
    let sso = state
        .sso()
        .ok_or_else(|| PortalError::not_found("Company sign-in is not configured here."))?;
    visitor.set_cookie(cookie_header(state.options(), FLOW_COOKIE, "", Some(0)));
    let flow_id = cookie(&headers, FLOW_COOKIE)
        .ok_or_else(|| refused("This sign-in expired or was started elsewhere. Sign in again."))?;
    let flow = state.store().get_session(flow_id).await?;
    // One use: a replayed callback finds nothing.
    state.store().delete_session(flow_id).await?;
    let flow = flow.ok_or_else(|| refused("This sign-in expired or was already used. Sign in again."))?;
    if let Some(error) = query.error {
        let detail = query.error_description.unwrap_or_default();
        return Err(refused(format!("The provider refused the sign-in: {error} {detail}")));
    }
    let expected = flow.data.get("state").and_then(Value::as_str).unwrap_or_default();
    if expected.is_empty() || query.state.as_deref() != Some(expected) {
        return Err(refused("The sign-in answer does not match the sign-in started here."));
    }
    let code = query
        .code
        .ok_or_else(|| refused("The provider sent no authorization code."))?;
    let identity = sso.finish(&state.options().public_url, &flow, code).await?;
    let next = safe_next(flow.data.get("next").and_then(Value::as_str), "/applications").to_owned();
    let (user, account) = membership::match_user(&state, &visitor, sso, &identity).await?;
    let mut extra = Map::new();
    extra.insert("id_token".into(), json!(identity.id_token));
    visitor.sign_in_with(&state, user, account, extra).await?;
    Ok(visitor.redirect(&next))
}

/// Where to go after signing out of a session that came from the provider,
/// and the `state` to expect back (kept in [`SIGN_OUT_COOKIE`]).
pub async fn logout_url(state: &PortalState, id_token: Option<&str>) -> Option<(String, String)> {
    let sso = state.sso()?;
    let expected = random_token();
    let url = sso
        .logout_url(&state.options().public_url, id_token?, &expected)
        .await?;
    Some((url, expected))
}

/// The provider sent the browser back from a sign-out with `returned`:
/// whether this browser started that sign-out. The cookie is cleared
/// either way.
pub fn sign_out_returned(
    state: &PortalState,
    visitor: &mut Visitor,
    headers: &axum::http::HeaderMap,
    returned: &str,
) -> bool {
    let expected = cookie(headers, SIGN_OUT_COOKIE).unwrap_or_default();
    visitor.set_cookie(cookie_header(state.options(), SIGN_OUT_COOKIE, "", Some(0)));
    !expected.is_empty() && maas_admin_api::auth::constant_time_eq(expected, returned)
}
