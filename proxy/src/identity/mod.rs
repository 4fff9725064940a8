//! Callers who bring the company identity provider's access token instead
//! of an API key, on products with `oidc` in their `auth`: the token is
//! verified ([`jwt`]) against the issuer's keys ([`jwks`]), its claims name
//! the caller ([`VerifiedToken::from_claims`]), and the product's
//! `token_plans` give the plan from its groups on every request
//! ([`maas_store::model::token_plan`]), so leaving a group takes effect
//! with the next token. The caller's organization and application are
//! the store's ([`maas_store::Store::account_for_sso`],
//! [`maas_store::Store::application_for_token_client`]), cached briefly.

pub mod jwks;
pub mod jwt;

use std::sync::Arc;
use std::time::Duration;

use maas_store::Store;
use maas_store::model::{AccountBinding, AuthContext, Credential, Plan, TokenCaller, token_plan};
use moka::sync::Cache;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::runtime::Handle;

use self::jwks::{IssuerKeys, KeySource};
use self::jwt::{JwsAlg, TokenError, TokenRules, candidates};
use crate::request::routing::ProductRoute;

/// `access_tokens:` of maas.yaml, as the proxy takes it.
#[derive(Debug, Clone)]
pub struct AccessTokenSettings {
    pub rules: TokenRules,
    pub keys: KeySource,
    /// Claim naming the caller's organization (dotted for a nested one).
    pub organization_claim: String,
    /// Claim listing the caller's groups (dotted for a nested one, e.g.
    /// Keycloak's `realm_access.roles`).
    pub groups_claim: String,
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub issuer: String,
    /// `client_id` (RFC 9068), else `azp`.
    pub client_id: String,
    /// `sub`, unless it is the client itself (a client-credentials token).
    pub user: Option<String>,
    pub organization: String,
    pub groups: Vec<String>,
}

/// The longest organization, client or user name taken from a token.
const MAX_NAME: usize = 256;

impl VerifiedToken {
    /// The caller named by a verified token's claims.
    pub fn from_claims(claims: &Map<String, Value>, settings: &AccessTokenSettings) -> Result<Self, TokenError> {
        let client_id = ["client_id", "azp"]
            .iter()
            .find_map(|name| claims.get(*name).and_then(Value::as_str))
            .ok_or_else(|| TokenError::MissingClaim("client_id".into()))?;
        let organization = match claim(claims, &settings.organization_claim) {
            Some(Value::String(name)) if !name.trim().is_empty() => name.trim(),
            Some(_) => return Err(TokenError::BadClaim(settings.organization_claim.clone(), "a name")),
            None => return Err(TokenError::MissingClaim(settings.organization_claim.clone())),
        };
        let groups = match claim(claims, &settings.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(group)) => vec![group.clone()],
            Some(Value::Array(groups)) => groups.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(_) => {
                return Err(TokenError::BadClaim(
                    settings.groups_claim.clone(),
                    "a list of group names",
                ));
            }
        };
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| *sub != client_id && !sub.is_empty());
        for (name, value) in [
            ("client_id", Some(client_id)),
            ("sub", user),
            ("organization", Some(organization)),
        ] {
            if value.is_some_and(|v| v.len() > MAX_NAME || v.chars().any(char::is_control)) {
                return Err(TokenError::BadClaim(name.into(), "a short printable name"));
            }
        }
        Ok(VerifiedToken {
            issuer: settings.rules.issuer.clone(),
            client_id: client_id.to_owned(),
            user: user.map(str::to_owned),
            organization: organization.to_owned(),
            groups,
        })
    }
}

/// A claim by name, or by a dotted path into nested objects when no claim
/// has the whole name.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Why a token caller was not admitted.
#[derive(Debug)]
pub enum TokenRefusal {
    /// Valid, but none of the product's `token_plans` matches its groups.
    NotEntitled,
    Store(maas_store::StoreError),
}

/// Verifies tokens and finds their callers' applications.
pub struct TokenVerifier {
    settings: AccessTokenSettings,
    keys: Arc<IssuerKeys>,
    /// (organization, client, product, person) → the caller's context, as
    /// the last request on that plan made it.
    callers: Cache<CallerKey, Arc<AuthContext>>,
    /// (application, person) pairs noted in the store lately.
    noted_users: Cache<(String, String), ()>,
}

type CallerKey = (String, String, String, Option<String>);

/// How long a caller's account and application are served from memory;
/// a change event about either empties the cache sooner.
const CALLER_TTL: Duration = Duration::from_secs(60);

/// How long a person noted calling as an application is not noted again.
const USER_NOTE_TTL: Duration = Duration::from_secs(3600);

impl TokenVerifier {
    pub fn new(settings: AccessTokenSettings, runtime: Handle) -> Result<TokenVerifier, String> {
        let keys = Arc::new(IssuerKeys::new(
            settings.keys.clone(),
            settings.rules.algorithms.clone(),
            runtime,
        )?);
        Ok(TokenVerifier {
            settings,
            keys,
            callers: Cache::builder().max_capacity(100_000).time_to_live(CALLER_TTL).build(),
            noted_users: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(USER_NOTE_TTL)
                .build(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.settings.rules.issuer
    }

    /// The caller of a valid token.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let rules = &self.settings.rules;
        let parsed = jwt::parse(token, rules)?;
        let set = self.keys.for_token(&parsed).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = jwt::verify(&parsed, &candidates(&set.keys, &parsed), rules, now)?;
        VerifiedToken::from_claims(&claims, &self.settings)
    }

    /// The request context of a verified caller on `route`'s product: the
    /// plan its groups give now, and its organization's application for
    /// the client (made on its first call, moved when the plan changes).
    pub async fn admit(
        &self,
        store: &Store,
        caller: &VerifiedToken,
        route: &ProductRoute,
    ) -> Result<Arc<AuthContext>, TokenRefusal> {
        let product = &route.product.system_name;
        let plan_name = token_plan(&route.product.token_plans, &caller.groups).ok_or(TokenRefusal::NotEntitled)?;
        let plan: &Plan = route
            .plans
            .iter()
            .find(|plan| plan.system_name == plan_name)
            .ok_or(TokenRefusal::NotEntitled)?;
        let cache_key = (
            caller.organization.clone(),
            caller.client_id.clone(),
            product.clone(),
            caller.user.clone(),
        );
        // The groups may give another plan than the cached context's: then
        // the application moves, through the store.
        if let Some(known) = self.callers.get(&cache_key)
            && known.plan.system_name == plan.system_name
        {
            return Ok(known);
        }
        let binding = AccountBinding {
            issuer: caller.issuer.clone(),
            claim_value: caller.organization.clone(),
        };
        let account = store
            .account_for_sso(&binding, &caller.organization)
            .await
            .map_err(TokenRefusal::Store)?;
        let application = store
            .application_for_token_client(&account, product, &caller.client_id, &plan.system_name)
            .await
            .map_err(TokenRefusal::Store)?;
        if let Some(user) = &caller.user {
            self.note_user(store, &application.id, user).await;
        }
        let context = Arc::new(AuthContext {
            credential: Credential::Token(TokenCaller {
                issuer: caller.issuer.clone(),
                client_id: caller.client_id.clone(),
                user: caller.user.clone(),
            }),
            application,
            account,
            plan: plan.clone(),
        });
        self.callers.insert(cache_key, context.clone());
        Ok(context)
    }

    /// Notes a person's first call as an application (again after
    /// [`USER_NOTE_TTL`]), so statistics list them; a failure is logged,
    /// never the caller's problem.
    async fn note_user(&self, store: &Store, application_id: &str, user: &str) {
        let pair = (application_id.to_owned(), user.to_owned());
        if self.noted_users.contains_key(&pair) {
            return;
        }
        match store.note_token_user(application_id, user).await {
            Ok(()) => self.noted_users.insert(pair, ()),
            Err(error) => tracing::warn!(%error, "a token caller could not be noted for statistics"),
        }
    }

    /// Forgets every cached caller (an application or account changed).
    pub fn forget_callers(&self) {
        self.callers.invalidate_all();
    }
}

/// Whether a bearer credential is shaped like a JWS (three base64url
/// parts), not like an API key: only those are verified as tokens.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ")
        && credential.bytes().filter(|b| *b == b'.').count() == 2
        && credential
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The algorithms verified when `access_tokens.algorithms` is not set.
pub fn default_algorithms() -> Vec<JwsAlg> {
    JwsAlg::ALL.to_vec()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::identity::jwt::tests::rules;

    fn settings() -> AccessTokenSettings {
        AccessTokenSettings {
            rules: rules(),
            keys: KeySource {
                issuer: "https://idp.example.com".into(),
                jwks_url: None,
                min_refresh: Duration::from_secs(10),
                max_age: Duration::from_secs(600),
                timeout: Duration::from_secs(5),
            },
            organization_claim: "org_name".into(),
            groups_claim: "groups".into(),
        }
    }

    fn caller(claims: Value) -> Result<VerifiedToken, TokenError> {
        VerifiedToken::from_claims(claims.as_object().unwrap(), &settings())
    }

    #[test]
    fn claims_name_the_client_user_organization_and_groups() {
        let bot =
            caller(json!({"client_id": "ci-bot", "sub": "ci-bot", "org_name": " Acme ", "groups": ["a", 7, "b"]}))
                .unwrap();
        assert_eq!(bot.client_id, "ci-bot");
        assert_eq!(bot.user, None, "a client's own token has no user");
        assert_eq!(bot.organization, "Acme");
        assert_eq!(bot.groups, ["a", "b"]);
        let person = caller(json!({"azp": "notebook", "sub": "ada", "org_name": "Acme", "groups": "solo"})).unwrap();
        assert_eq!(
            (person.client_id.as_str(), person.user.as_deref()),
            ("notebook", Some("ada"))
        );
        assert_eq!(person.groups, ["solo"]);
        assert_eq!(
            caller(json!({"sub": "ada", "org_name": "Acme"})).unwrap_err(),
            TokenError::MissingClaim("client_id".into())
        );
        assert_eq!(
            caller(json!({"client_id": "c"})).unwrap_err(),
            TokenError::MissingClaim("org_name".into())
        );
        assert_eq!(
            caller(json!({"client_id": "c", "org_name": ["Acme"]})).unwrap_err(),
            TokenError::BadClaim("org_name".into(), "a name")
        );
        assert_eq!(
            caller(json!({"client_id": "c", "org_name": "Acme", "groups": {"a": 1}})).unwrap_err(),
            TokenError::BadClaim("groups".into(), "a list of group names")
        );
        assert!(caller(json!({"client_id": "c\n", "org_name": "Acme"})).is_err());
        assert!(caller(json!({"client_id": "c".repeat(300), "org_name": "Acme"})).is_err());
        assert!(
            caller(json!({"client_id": "c", "org_name": "Acme"}))
                .unwrap()
                .groups
                .is_empty()
        );
    }

    #[test]
    fn nested_claims_are_found_by_dotted_path() {
        let mut settings = settings();
        settings.groups_claim = "realm_access.roles".into();
        let claims = json!({"client_id": "c", "org_name": "Acme", "realm_access": {"roles": ["gold"]}});
        let found = VerifiedToken::from_claims(claims.as_object().unwrap(), &settings).unwrap();
        assert_eq!(found.groups, ["gold"]);
        let flat = json!({"client_id": "c", "org_name": "Acme", "realm_access.roles": ["flat"]});
        let found = VerifiedToken::from_claims(flat.as_object().unwrap(), &settings).unwrap();
        assert_eq!(found.groups, ["flat"]);
    }

    #[test]
    fn only_jws_shaped_credentials_are_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9.c2ln"));
        assert!(!looks_like_jwt("sk-maas-abcdef"));
        assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9"));
        assert!(!looks_like_jwt("eyJ a.b.c"));
    }
}
