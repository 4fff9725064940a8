//! Verifying a JWT access token (RFC 7519, JWS compact form, RFC 9068):
//! pure functions of the token, the issuer's keys and the clock, so every
//! refusal is unit-tested and fuzzed without a network.
//!
//! Only asymmetric algorithms exist here: `none` and the HMAC family are
//! not variants of [`JwsAlg`], so a token naming them is refused before
//! any key is looked at, and a public key can never be used as an HMAC
//! secret. A key verifies only the algorithms of its own type (an RSA key
//! never an ECDSA signature), and only the one its JWK names when it
//! names one.

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a signed JWT: {0}")]
    Malformed(&'static str),
    #[error("the token is signed with `{0}`, which this gateway does not accept")]
    Algorithm(String),
    #[error("the token names a critical header extension this gateway does not understand")]
    CriticalHeader,
    #[error("the token is signed by a key the issuer does not publish")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token was issued by `{0}`, not by this gateway's issuer")]
    Issuer(String),
    #[error("the token is not for this gateway (its audience does not name it)")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token's `{0}` claim is not {1}")]
    BadClaim(String, &'static str),
    #[error("the issuer's keys could not be fetched; try again shortly")]
    KeysUnavailable,
}

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
    signing_input: &'a [u8],
    signature: Vec<u8>,
    payload: Vec<u8>,
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

/// A public key ready to verify one algorithm.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: JwsAlg,
    pub key: aws_lc_rs::signature::ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys that may have signed `token`: those of its algorithm and, when
/// it names one, its key id.
pub fn candidates<'k>(keys: &'k [VerifyingKey], token: &UnverifiedToken<'_>) -> Vec<&'k VerifyingKey> {
    keys.iter()
        .filter(|key| key.alg == token.alg)
        .filter(|key| token.kid.is_none() || key.kid == token.kid)
        .collect()
}

impl UnverifiedToken<'_> {
    /// The claims, once one of `keys` verifies the signature and the
    /// claims pass `rules` at `now` (Unix seconds).
    pub fn verify(
        &self,
        keys: &[&VerifyingKey],
        rules: &TokenRules,
        now: i64,
    ) -> Result<Map<String, Value>, TokenError> {
        if keys.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        if !keys
            .iter()
            .any(|key| key.key.verify_sig(self.signing_input, &self.signature).is_ok())
        {
            return Err(TokenError::BadSignature);
        }
        let claims: Map<String, Value> = serde_json::from_slice(&self.payload)
            .map_err(|_| TokenError::Malformed("its claims are not a JSON object"))?;
        check_claims(&claims, rules, now)?;
        Ok(claims)
    }
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
pub(crate) mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    use super::*;

    pub(crate) fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key of each kind, with its public JWK.
    pub(crate) enum TestKey {
        Rsa(RsaKeyPair),
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl TestKey {
        pub(crate) fn rsa() -> TestKey {
            TestKey::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
        }
        pub(crate) fn ec() -> TestKey {
            TestKey::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
        }
        pub(crate) fn ed() -> TestKey {
            TestKey::Ed(Ed25519KeyPair::generate().unwrap())
        }

        pub(crate) fn jwk(&self, kid: &str) -> Value {
            match self {
                TestKey::Rsa(pair) => {
                    // RFC 8017 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
                    let der = pair.public_key().as_ref();
                    let (_, sequence) = der_element(der);
                    let (rest, n) = der_element(sequence);
                    let (_, e) = der_element(rest);
                    let unsigned = |int: &[u8]| int[int.iter().take_while(|b| **b == 0).count()..].to_vec();
                    json!({"kty": "RSA", "kid": kid, "n": b64(&unsigned(n)), "e": b64(&unsigned(e))})
                }
                TestKey::Ec(pair) => {
                    let point = pair.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
                }
                TestKey::Ed(pair) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key().as_ref())})
                }
            }
        }

        pub(crate) fn sign(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
            let mut header = json!({"alg": alg, "typ": "at+jwt"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let rng = SystemRandom::new();
            let signature = match self {
                TestKey::Rsa(pair) => {
                    let encoding: &'static dyn signature::RsaEncoding = match alg {
                        "PS256" => &signature::RSA_PSS_SHA256,
                        "RS384" => &signature::RSA_PKCS1_SHA384,
                        _ => &signature::RSA_PKCS1_SHA256,
                    };
                    let mut out = vec![0; pair.public_modulus_len()];
                    pair.sign(encoding, &rng, input.as_bytes(), &mut out).unwrap();
                    out
                }
                TestKey::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
                TestKey::Ed(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
            };
            format!("{input}.{}", b64(&signature))
        }
    }

    /// One DER element: (what follows it, its contents).
    fn der_element(der: &[u8]) -> (&[u8], &[u8]) {
        let (len, start) = match der[1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let count = usize::from(long & 0x7f);
                let len = der[2..2 + count].iter().fold(0, |acc, b| acc << 8 | usize::from(*b));
                (len, 2 + count)
            }
        };
        (&der[start + len..], &der[start..start + len])
    }

    pub(crate) fn rules() -> TokenRules {
        TokenRules {
            issuer: "https://idp.example.com".into(),
            audience: "maas".into(),
            algorithms: JwsAlg::ALL.to_vec(),
            leeway_secs: 30,
        }
    }

    pub(crate) const NOW: i64 = 1_800_000_000;

    pub(crate) fn claims() -> Value {
        json!({"iss": "https://idp.example.com", "aud": "maas", "exp": NOW + 300, "iat": NOW,
               "client_id": "ci-bot", "sub": "ci-bot", "org_name": "Acme", "groups": ["developers"]})
    }

    fn keys_of(jwks: &Value, rules: &TokenRules) -> Vec<VerifyingKey> {
        crate::identity::jwks::parse_key_set(jwks.to_string().as_bytes(), &rules.algorithms).unwrap()
    }

    fn verify(token: &str, keys: &[VerifyingKey], rules: &TokenRules) -> Result<Map<String, Value>, TokenError> {
        let parsed = parse(token, rules)?;
        parsed.verify(&candidates(keys, &parsed), rules, NOW)
    }

    #[test]
    fn every_key_type_verifies_its_own_tokens() {
        let rules = rules();
        for (key, alg) in [
            (TestKey::rsa(), "RS256"),
            (TestKey::rsa(), "PS256"),
            (TestKey::rsa(), "RS384"),
            (TestKey::ec(), "ES256"),
            (TestKey::ed(), "EdDSA"),
        ] {
            let keys = keys_of(&json!({"keys": [key.jwk("k1")]}), &rules);
            let token = key.sign(alg, Some("k1"), &claims());
            let claims = verify(&token, &keys, &rules).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(claims["client_id"], "ci-bot");
            // Without a kid, the keys of its algorithm are tried.
            assert!(verify(&key.sign(alg, None, &super::tests::claims()), &keys, &rules).is_ok());
        }
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let rules = rules();
        let key = TestKey::rsa();
        let keys = keys_of(&json!({"keys": [key.jwk("k1")]}), &rules);
        let token = key.sign("RS256", Some("k1"), &claims());
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut richer = claims();
        richer["groups"] = json!(["ml-platform"]);
        let forged = format!("{head}.{}.{signature}", b64(richer.to_string().as_bytes()));
        assert_eq!(verify(&forged, &keys, &rules).unwrap_err(), TokenError::BadSignature);
        let other = TestKey::rsa().sign("RS256", Some("k1"), &claims());
        assert_eq!(verify(&other, &keys, &rules).unwrap_err(), TokenError::BadSignature);
        let unknown = TestKey::rsa().sign("RS256", Some("k2"), &claims());
        assert_eq!(verify(&unknown, &keys, &rules).unwrap_err(), TokenError::UnknownKey);
        // An RSA key's JWK never checks an ECDSA signature.
        let ec = TestKey::ec().sign("ES256", Some("k1"), &claims());
        assert_eq!(verify(&ec, &keys, &rules).unwrap_err(), TokenError::UnknownKey);
    }

    #[test]
    fn none_hmac_and_disallowed_algorithms_are_refused_before_any_key() {
        let mut narrowed = rules();
        let key = TestKey::rsa();
        let keys = keys_of(&json!({"keys": [key.jwk("k1")]}), &narrowed);
        let body = b64(claims().to_string().as_bytes());
        for alg in ["none", "HS256", "HS512", "RS1", ""] {
            let header = b64(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
            // An HMAC "signed" with the RSA key's public modulus as secret.
            let token = format!("{header}.{body}.{}", b64(b"whatever"));
            assert_eq!(
                verify(&token, &keys, &narrowed).unwrap_err(),
                TokenError::Algorithm(alg.into()),
                "{alg}"
            );
            assert!(verify(&format!("{header}.{body}."), &keys, &narrowed).is_err());
        }
        narrowed.algorithms = vec![JwsAlg::ES256];
        let token = key.sign("RS256", Some("k1"), &claims());
        assert_eq!(
            verify(&token, &keys, &narrowed).unwrap_err(),
            TokenError::Algorithm("RS256".into())
        );
        let crit = format!(
            "{}.{body}.{}",
            b64(json!({"alg": "RS256", "crit": ["exp"]}).to_string().as_bytes()),
            b64(b"x")
        );
        assert_eq!(verify(&crit, &keys, &rules()).unwrap_err(), TokenError::CriticalHeader);
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
        assert_eq!(
            check(json!({"exp": "soon"})),
            Err(TokenError::BadClaim("exp".into(), "a number of seconds"))
        );
        assert_eq!(
            check(json!({"exp": 1e300})),
            Err(TokenError::BadClaim("exp".into(), "a number of seconds"))
        );
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
            "eyJhbGciOiJSUzI1NiJ9.e30.",
            "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.AAAA",
        ] {
            assert!(verify(token, &[], &rules).is_err(), "{token:?}");
        }
        assert_eq!(
            parse(&"a".repeat(MAX_TOKEN_BYTES + 1), &rules).unwrap_err(),
            TokenError::Malformed("it is too long")
        );
    }
}
