//! `access_tokens:` in maas.yaml: the identity provider whose JWT access
//! tokens the gateway takes instead of API keys, and its checks.

use serde::{Deserialize, Serialize};

use crate::{MaasConfig, is_http_url};

/// The JWS algorithms `access_tokens.algorithms` may name: asymmetric
/// ones only (never `none`, never an HMAC keyed by a public key).
pub const TOKEN_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `access_tokens`: the identity provider whose JWT access tokens the
/// gateway takes instead of API keys, on products with `oidc` in `auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessTokenSettings {
    pub enabled: bool,
    /// The issuer tokens must name (`iss`); `sso.issuer_url` when unset.
    pub issuer_url: Option<String>,
    /// What tokens' `aud` must name: the resource the IdP issues them for.
    pub audience: Option<String>,
    /// The issuer's key set; by default the `jwks_uri` of its discovery
    /// document (`{issuer}/.well-known/openid-configuration`).
    pub jwks_url: Option<String>,
    /// Signature algorithms accepted ([`TOKEN_ALGORITHMS`] by default).
    pub algorithms: Vec<String>,
    /// Clock skew forgiven on `exp` and `nbf`.
    pub leeway_secs: u32,
    /// Claim naming the caller's organization; `sso.account_claim` when unset.
    pub organization_claim: Option<String>,
    /// Claim listing the caller's groups, matched by products' `token_plans`
    /// (a dotted path reaches a nested one: `realm_access.roles`).
    pub groups_claim: String,
    /// Keys are fetched again at most this often, however many tokens name
    /// a key the gateway has not seen.
    pub jwks_min_refresh_secs: u32,
    /// Keys older than this are fetched again on the next token.
    pub jwks_max_age_secs: u32,
}

impl Default for AccessTokenSettings {
    fn default() -> Self {
        AccessTokenSettings {
            enabled: false,
            issuer_url: None,
            audience: None,
            jwks_url: None,
            algorithms: TOKEN_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
            leeway_secs: 30,
            organization_claim: None,
            groups_claim: "groups".into(),
            jwks_min_refresh_secs: 10,
            jwks_max_age_secs: 3600,
        }
    }
}

impl MaasConfig {
    /// The issuer whose tokens are taken, as configured or as SSO's.
    pub fn access_token_issuer(&self) -> Option<&str> {
        self.access_tokens
            .issuer_url
            .as_deref()
            .or(self.sso.issuer_url.as_deref())
    }

    /// The claim naming a token caller's organization.
    pub fn access_token_organization_claim(&self) -> &str {
        self.access_tokens
            .organization_claim
            .as_deref()
            .unwrap_or(&self.sso.account_claim)
    }

    pub(crate) fn validate_access_tokens(&self, push: &mut impl FnMut(&str, String)) {
        let tokens = &self.access_tokens;
        for (path, url) in [
            ("access_tokens.issuer_url", &tokens.issuer_url),
            ("access_tokens.jwks_url", &tokens.jwks_url),
        ] {
            if let Some(url) = url
                && !is_http_url(url)
            {
                push(path, format!("`{url}` is not an http(s) URL"));
            }
        }
        for (i, alg) in tokens.algorithms.iter().enumerate() {
            if !TOKEN_ALGORITHMS.contains(&alg.as_str()) {
                push(
                    &format!("access_tokens.algorithms[{i}]"),
                    format!(
                        "`{alg}` is not accepted: use {} (never `none` or an HMAC)",
                        TOKEN_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if tokens.leeway_secs > 300 {
            push("access_tokens.leeway_secs", "must be at most 300".into());
        }
        if tokens.jwks_min_refresh_secs == 0 {
            push("access_tokens.jwks_min_refresh_secs", "must be at least 1".into());
        }
        if tokens.jwks_max_age_secs < tokens.jwks_min_refresh_secs {
            push(
                "access_tokens.jwks_max_age_secs",
                "must be at least jwks_min_refresh_secs".into(),
            );
        }
        if tokens.groups_claim.trim().is_empty() {
            push("access_tokens.groups_claim", "must name a claim".into());
        }
        if !tokens.enabled {
            return;
        }
        if self.access_token_issuer().is_none() {
            push(
                "access_tokens.issuer_url",
                "required when access tokens are enabled (or set sso.issuer_url)".into(),
            );
        }
        if tokens.audience.as_deref().is_none_or(|a| a.trim().is_empty()) {
            push(
                "access_tokens.audience",
                "required when access tokens are enabled: the `aud` the identity provider puts in tokens for this gateway"
                    .into(),
            );
        }
        if tokens.algorithms.is_empty() {
            push("access_tokens.algorithms", "must list at least one algorithm".into());
        }
    }
}
