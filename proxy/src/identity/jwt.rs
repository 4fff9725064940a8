//! Verifying a JWT access token's signature with the issuer's keys. The
//! token is read and its claims checked by [`maas_protocol::access_token`]
//! (keyless, fuzzed); here a key verifies only the algorithm it was parsed
//! for ([`crate::identity::jwks`]), so an RSA key never checks an ECDSA
//! signature and a JWK naming its `alg` checks only that one.

pub use maas_protocol::access_token::{
    JwsAlg, MAX_TOKEN_BYTES, TokenError, TokenRules, UnverifiedToken, check_claims, parse,
};
use serde_json::{Map, Value};

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

/// The claims of `token`, once one of `keys` verifies its signature and
/// the claims pass `rules` at `now` (Unix seconds).
pub fn verify(
    token: &UnverifiedToken<'_>,
    keys: &[&VerifyingKey],
    rules: &TokenRules,
    now: i64,
) -> Result<Map<String, Value>, TokenError> {
    if keys.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    if !keys
        .iter()
        .any(|key| key.key.verify_sig(token.signing_input, &token.signature).is_ok())
    {
        return Err(TokenError::BadSignature);
    }
    let claims: Map<String, Value> = serde_json::from_slice(&token.payload)
        .map_err(|_| TokenError::Malformed("its claims are not a JSON object"))?;
    check_claims(&claims, rules, now)?;
    Ok(claims)
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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

    fn verify_with(token: &str, keys: &[VerifyingKey], rules: &TokenRules) -> Result<Map<String, Value>, TokenError> {
        let parsed = parse(token, rules)?;
        super::verify(&parsed, &candidates(keys, &parsed), rules, NOW)
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
            let claims = verify_with(&token, &keys, &rules).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(claims["client_id"], "ci-bot");
            // Without a kid, the keys of its algorithm are tried.
            assert!(verify_with(&key.sign(alg, None, &super::tests::claims()), &keys, &rules).is_ok());
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
        assert_eq!(
            verify_with(&forged, &keys, &rules).unwrap_err(),
            TokenError::BadSignature
        );
        let other = TestKey::rsa().sign("RS256", Some("k1"), &claims());
        assert_eq!(
            verify_with(&other, &keys, &rules).unwrap_err(),
            TokenError::BadSignature
        );
        let unknown = TestKey::rsa().sign("RS256", Some("k2"), &claims());
        assert_eq!(
            verify_with(&unknown, &keys, &rules).unwrap_err(),
            TokenError::UnknownKey
        );
        // An RSA key's JWK never checks an ECDSA signature.
        let ec = TestKey::ec().sign("ES256", Some("k1"), &claims());
        assert_eq!(verify_with(&ec, &keys, &rules).unwrap_err(), TokenError::UnknownKey);
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
                verify_with(&token, &keys, &narrowed).unwrap_err(),
                TokenError::Algorithm(alg.into()),
                "{alg}"
            );
            assert!(verify_with(&format!("{header}.{body}."), &keys, &narrowed).is_err());
        }
        narrowed.algorithms = vec![JwsAlg::ES256];
        let token = key.sign("RS256", Some("k1"), &claims());
        assert_eq!(
            verify_with(&token, &keys, &narrowed).unwrap_err(),
            TokenError::Algorithm("RS256".into())
        );
        let crit = format!(
            "{}.{body}.{}",
            b64(json!({"alg": "RS256", "crit": ["exp"]}).to_string().as_bytes()),
            b64(b"x")
        );
        assert_eq!(
            verify_with(&crit, &keys, &rules()).unwrap_err(),
            TokenError::CriticalHeader
        );
    }
}
