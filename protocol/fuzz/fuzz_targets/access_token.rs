//! Any bearer credential: reading it as an access token and checking its
//! claims never panics, and a token read is one whose algorithm is on the
//! allow-list and whose signing input is its first two parts as sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_protocol::access_token::{JwsAlg, TokenRules, check_claims, parse};

fuzz_target!(|input: (&str, &[u8], i64)| {
    let (token, claims, now) = input;
    let rules = TokenRules {
        issuer: "https://idp.example.com".into(),
        audience: "maas".into(),
        algorithms: vec![JwsAlg::RS256, JwsAlg::ES256, JwsAlg::EdDSA],
        leeway_secs: 30,
    };
    if let Ok(parsed) = parse(token, &rules) {
        assert!(rules.algorithms.contains(&parsed.alg), "{token:?}");
        let input = std::str::from_utf8(parsed.signing_input).unwrap();
        assert!(token.starts_with(input) && input.matches('.').count() == 1, "{token:?}");
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&parsed.payload) {
            let _ = check_claims(&map, &rules, now);
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(claims) {
        if check_claims(&map, &rules, now).is_ok() {
            assert_eq!(map.get("iss").and_then(|v| v.as_str()), Some("https://idp.example.com"));
            assert!(map.contains_key("exp") && map.contains_key("aud"));
        }
    }
});
