//! Which credentials a product takes, and what a caller with the company
//! identity provider's access token gets: the plan its groups entitle it
//! to, decided on every token so that leaving a group takes effect with
//! the next token, never cached on an application.

use serde::{Deserialize, Serialize};

use super::ApiKey;

/// A credential a product accepts (`auth:` of a product).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The gateway's own API keys, in the product's `credentials` locations.
    ApiKey,
    /// A JWT access token of the configured issuer (`access_tokens:` in
    /// maas.yaml), as `Authorization: Bearer`.
    Oidc,
}

pub(super) fn api_key_only() -> Vec<AuthMethod> {
    vec![AuthMethod::ApiKey]
}

pub(super) fn is_api_key_only(methods: &[AuthMethod]) -> bool {
    methods == [AuthMethod::ApiKey]
}

/// One rule of a product's `token_plans`: callers whose token lists
/// `group` in its groups claim are on `plan`; a rule without a group
/// takes every token of the issuer. The first matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenPlanRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `system_name` of one of the product's plans.
    pub plan: String,
}

/// The plan of a token carrying `groups`, by the first rule that matches;
/// `None`: the token is not entitled to the product.
pub fn token_plan<'a>(rules: &'a [TokenPlanRule], groups: &[String]) -> Option<&'a str> {
    rules
        .iter()
        .find(|rule| match &rule.group {
            None => true,
            Some(group) => groups.iter().any(|g| g == group),
        })
        .map(|rule| rule.plan.as_str())
}

/// Who calls with an access token: the issuer's client and, when the
/// token was issued to a person, that person (`sub`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCaller {
    pub issuer: String,
    pub client_id: String,
    /// The person the token was issued to; absent for a client's own
    /// token (client credentials), whose `sub` is the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The credential a request was admitted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    Key(ApiKey),
    Token(TokenCaller),
}

impl Credential {
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Credential::Key(key) => Some(key),
            Credential::Token(_) => None,
        }
    }

    pub fn token(&self) -> Option<&TokenCaller> {
        match self {
            Credential::Key(_) => None,
            Credential::Token(caller) => Some(caller),
        }
    }
}

/// The name of the application a token client gets in its organization
/// on a product, made on the client's first call; a long client id is
/// cut so the name stays within an application name's 200 characters.
pub fn token_application_name(client_id: &str, product: &str) -> String {
    let client: String = client_id.chars().take(120).collect();
    format!("{client} ({product})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(group: Option<&str>, plan: &str) -> TokenPlanRule {
        TokenPlanRule {
            group: group.map(str::to_owned),
            plan: plan.to_owned(),
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = [rule(Some("ml-platform"), "gold"), rule(Some("developers"), "basic")];
        let groups = |gs: &[&str]| gs.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            token_plan(&rules, &groups(&["developers", "ml-platform"])),
            Some("gold")
        );
        assert_eq!(token_plan(&rules, &groups(&["developers"])), Some("basic"));
        assert_eq!(token_plan(&rules, &groups(&["sales"])), None);
        assert_eq!(token_plan(&rules, &[]), None);
        // Group names are compared exactly: no prefix, no case folding.
        assert_eq!(token_plan(&rules, &groups(&["Developers", "ml"])), None);
        let with_default = [rule(Some("ml-platform"), "gold"), rule(None, "free")];
        assert_eq!(token_plan(&with_default, &groups(&["sales"])), Some("free"));
        assert_eq!(token_plan(&[], &groups(&["developers"])), None);
    }

    #[test]
    fn application_names_fit_whatever_the_client_id() {
        assert_eq!(token_application_name("ci-bot", "granite"), "ci-bot (granite)");
        let long = token_application_name(&"é".repeat(256), &"p".repeat(64));
        assert!(long.chars().count() <= 200, "{}", long.chars().count());
    }

    #[test]
    fn products_take_api_keys_unless_told() {
        assert!(is_api_key_only(&api_key_only()));
        assert!(!is_api_key_only(&[AuthMethod::ApiKey, AuthMethod::Oidc]));
        let methods: Vec<AuthMethod> = serde_json::from_str(r#"["api_key", "oidc"]"#).unwrap();
        assert_eq!(methods, [AuthMethod::ApiKey, AuthMethod::Oidc]);
        assert!(serde_json::from_str::<Vec<AuthMethod>>(r#"["jwt"]"#).is_err());
    }
}
