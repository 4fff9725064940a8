//! A JWT access token (RFC 7519 in JWS compact form, RFC 9068) read and
//! checked without any key: split and decoded, its algorithm held to an
//! allow-list, its claims checked against the issuer, audience and clock.
//! The signature is checked by the proxy (`maas_proxy::identity::jwt`) with
//! the issuer's keys; everything an attacker's bytes reach first is here,
//! unit-tested and fuzzed (`fuzz_targets/access_token.rs`).
//!
//! Only asymmetric algorithms exist: `none` and the HMAC family are not
//! variants of [`JwsAlg`], so a token naming them is refused before any
//! key is looked at, and a public key can never be used as an HMAC secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The longest token looked at; an IdP's access token is a few KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A JWS signature algorithm this gateway verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwsAlg {
    pub const ALL: [JwsAlg; 9] = [
        JwsAlg::RS256,
        JwsAlg::RS384,
        JwsAlg::RS512,
        JwsAlg::PS256,
        JwsAlg::PS384,
        JwsAlg::PS512,
        JwsAlg::ES256,
        JwsAlg::ES384,
        JwsAlg::EdDSA,
    ];

    /// The algorithm of a JWS `alg` name, if it is one verified here.
    pub fn parse(name: &str) -> Option<JwsAlg> {
        JwsAlg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JWK key type (`kty`) and curve (`crv`; none for RSA) of the
    /// keys that verify this algorithm: a key verifies no other.
    pub fn key_type(self) -> (&'static str, Option<&'static str>) {
        match self {
            JwsAlg::RS256 | JwsAlg::RS384 | JwsAlg::RS512 | JwsAlg::PS256 | JwsAlg::PS384 | JwsAlg::PS512 => {
                ("RSA", None)
            }
            JwsAlg::ES256 => ("EC", Some("P-256")),
            JwsAlg::ES384 => ("EC", Some("P-384")),
            JwsAlg::EdDSA => ("OKP", Some("Ed25519")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JwsAlg::RS256 => "RS256",
            JwsAlg::RS384 => "RS384",
            JwsAlg::RS512 => "RS512",
            JwsAlg::PS256 => "PS256",
            JwsAlg::PS384 => "PS384",
            JwsAlg::PS512 => "PS512",
            JwsAlg::ES256 => "ES256",
            JwsAlg::ES384 => "ES384",
            JwsAlg::EdDSA => "EdDSA",
        }
    }
}

/// Why a token is refused. The messages go to the client: they say what
/// is wrong with the token, never anything about the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    Algorithm(String),
    CriticalHeader,
    UnknownKey,
    BadSignature,
    Issuer(String),
    Audience,
    Expired,
    NotYetValid,
    MissingClaim(String),
    BadClaim(String, &'static str),
    KeysUnavailable,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(a) => write!(f, "the token is not a signed JWT: {a}"),
            TokenError::Algorithm(a) => write!(f, "the token is signed with `{a}`, which this gateway does not accept"),
            TokenError::CriticalHeader => {
                f.write_str("the token names a critical header extension this gateway does not understand")
            }
            TokenError::UnknownKey => f.write_str("the token is signed by a key the issuer does not publish"),
            TokenError::BadSignature => f.write_str("the token's signature does not verify"),
            TokenError::Issuer(a) => write!(f, "the token was issued by `{a}`, not by this gateway's issuer"),
            TokenError::Audience => f.write_str("the token is not for this gateway (its audience does not name it)"),
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::NotYetValid => f.write_str("the token is not valid yet"),
            TokenError::MissingClaim(a) => write!(f, "the token has no `{a}` claim"),
            TokenError::BadClaim(a, b) => write!(f, "the token's `{a}` claim is not {b}"),
            TokenError::KeysUnavailable => f.write_str("the issuer's keys could not be fetched; try again shortly"),
        }
    }
}

impl std::error::Error for TokenError {}

/// What a verified token must say: who issued it, for whom, with which
/// algorithms, and how much clock skew is forgiven.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<JwsAlg>,
    pub leeway_secs: i64,
}

/// A token split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub alg: JwsAlg,
    pub kid: Option<String>,
    /// What the signature signs: the header and payload as sent.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
    /// The claims as sent, read once the signature verifies.
    pub payload: Vec<u8>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// Splits a compact JWS and reads its header; the algorithm must be one
/// `rules` allow.
pub fn parse<'a>(token: &'a str, rules: &TokenRules) -> Result<UnverifiedToken<'a>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("it is too long"));
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("it does not have three dot-separated parts"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed("a part is not base64url"))
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed("its header is not JSON"))?;
    if header.crit.is_some() {
        return Err(TokenError::CriticalHeader);
    }
    let alg = JwsAlg::parse(&header.alg)
        .filter(|alg| rules.algorithms.contains(alg))
        .ok_or_else(|| TokenError::Algorithm(header.alg.chars().take(32).collect()))?;
    let signing_input_len = token.len() - signature.len() - 1;
    Ok(UnverifiedToken {
        alg,
        kid: header.kid,
        signing_input: &token.as_bytes()[..signing_input_len],
        signature: decode(signature)?,
        payload: decode(payload)?,
    })
}

/// `iss`, `aud`, `exp` and `nbf` as RFC 7519 defines them, with `leeway`
/// seconds of clock skew either way. `exp` is required: an access token
/// that never expires would outlive every group change.
pub fn check_claims(claims: &Map<String, Value>, rules: &TokenRules, now: i64) -> Result<(), TokenError> {
    match claims.get("iss") {
        Some(Value::String(issuer)) if *issuer == rules.issuer => {}
        Some(Value::String(issuer)) => return Err(TokenError::Issuer(issuer.chars().take(200).collect())),
        Some(_) => return Err(TokenError::BadClaim("iss".into(), "a string")),
        None => return Err(TokenError::MissingClaim("iss".into())),
    }
    let audience_named = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == rules.audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(rules.audience.as_str())),
        Some(_) => return Err(TokenError::BadClaim("aud".into(), "a string or a list of strings")),
        None => return Err(TokenError::MissingClaim("aud".into())),
    };
    if !audience_named {
        return Err(TokenError::Audience);
    }
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    if now >= exp.saturating_add(rules.leeway_secs) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now.saturating_add(rules.leeway_secs) < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// A NumericDate claim (seconds, possibly fractional) as whole seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                // Past i64 a cast would saturate: a number no clock reaches is not a date.
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.0e18)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| TokenError::BadClaim(name.into(), "a number of seconds")),
        Some(_) => Err(TokenError::BadClaim(name.into(), "a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> TokenRules {
        TokenRules {
            issuer: "https://idp.example.com".into(),
            audience: "maas".into(),
            algorithms: JwsAlg::ALL.to_vec(),
            leeway_secs: 30,
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"iss": "https://idp.example.com", "aud": "maas", "exp": NOW + 300, "iat": NOW})
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn none_hmac_and_disallowed_algorithms_are_refused_before_any_key() {
        let body = b64(claims().to_string().as_bytes());
        for alg in ["none", "HS256", "HS512", "RS1", ""] {
            let header = b64(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
            let token = format!("{header}.{body}.{}", b64(b"whatever"));
            assert_eq!(
                parse(&token, &rules()).unwrap_err(),
                TokenError::Algorithm(alg.into()),
                "{alg}"
            );
        }
        let mut narrowed = rules();
        narrowed.algorithms = vec![JwsAlg::ES256];
        let header = b64(json!({"alg": "RS256"}).to_string().as_bytes());
        let token = format!("{header}.{body}.{}", b64(b"sig"));
        assert_eq!(
            parse(&token, &narrowed).unwrap_err(),
            TokenError::Algorithm("RS256".into())
        );
        let parsed = parse(&token, &rules()).unwrap();
        assert_eq!((parsed.alg, parsed.kid.as_deref()), (JwsAlg::RS256, None));
        assert_eq!(parsed.signing_input, format!("{header}.{body}").as_bytes());
        assert_eq!(parsed.signature, b"sig");
        let crit = format!(
            "{}.{body}.{}",
            b64(json!({"alg": "RS256", "crit": ["exp"]}).to_string().as_bytes()),
            b64(b"x")
        );
        assert_eq!(parse(&crit, &rules()).unwrap_err(), TokenError::CriticalHeader);
    }

    #[test]
    fn issuer_audience_and_lifetime_are_checked_with_leeway() {
        let rules = rules();
        let check = |patch: Value| {
            let mut claims = claims();
            for (name, value) in patch.as_object().unwrap() {
                if value.is_null() {
                    claims.as_object_mut().unwrap().remove(name);
                } else {
                    claims[name] = value.clone();
                }
            }
            check_claims(claims.as_object().unwrap(), &rules, NOW)
        };
        assert_eq!(check(json!({})), Ok(()));
        assert_eq!(
            check(json!({"iss": "https://evil.example.com"})),
            Err(TokenError::Issuer("https://evil.example.com".into()))
        );
        assert_eq!(
            check(json!({"iss": "https://idp.example.com/"})),
            Err(TokenError::Issuer("https://idp.example.com/".into()))
        );
        assert_eq!(check(json!({"iss": null})), Err(TokenError::MissingClaim("iss".into())));
        assert_eq!(check(json!({"aud": "other"})), Err(TokenError::Audience));
        assert_eq!(check(json!({"aud": ["other", "maas"]})), Ok(()));
        assert_eq!(check(json!({"aud": ["other"]})), Err(TokenError::Audience));
        assert_eq!(check(json!({"aud": null})), Err(TokenError::MissingClaim("aud".into())));
        assert_eq!(
            check(json!({"aud": 7})),
            Err(TokenError::BadClaim("aud".into(), "a string or a list of strings"))
        );
        assert_eq!(check(json!({"exp": null})), Err(TokenError::MissingClaim("exp".into())));
        assert_eq!(check(json!({"exp": NOW - 29})), Ok(()), "within the leeway");
        assert_eq!(check(json!({"exp": NOW - 30})), Err(TokenError::Expired));
        let not_a_date = Err(TokenError::BadClaim("exp".into(), "a number of seconds"));
        assert_eq!(check(json!({"exp": "soon"})), not_a_date);
        assert_eq!(check(json!({"exp": 1e300})), not_a_date);
        assert_eq!(check(json!({"exp": NOW as f64 + 100.5})), Ok(()));
        assert_eq!(check(json!({"nbf": NOW + 30})), Ok(()));
        assert_eq!(check(json!({"nbf": NOW + 31})), Err(TokenError::NotYetValid));
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        let rules = rules();
        for token in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "eyJhbGciOiJSUzI1NiJ9.e30",
            "eyJhbGciOiJSUzI1NiJ9.e30.!!",
            "e30.e30.e30",
            "W10.e30.",
            "eyJhbGciOiJSUzI1NiJ9.e30=.AAAA",
        ] {
            assert!(parse(token, &rules).is_err(), "{token:?}");
        }
        assert_eq!(
            parse(&"a".repeat(MAX_TOKEN_BYTES + 1), &rules).unwrap_err(),
            TokenError::Malformed("it is too long")
        );
    }
}
