//! `deploy/keycloak/maas-realm.json` gives the portal what its defaults
//! expect: the client with PKCE and the callback path the portal serves,
//! the `org_name`, `email_verified` and `groups` claims, the admin group;
//! and no secret in the file.

use serde_json::Value;

fn realm() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/keycloak/maas-realm.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_realm_matches_what_the_portal_reads() {
    let realm = realm();
    assert_eq!(realm["realm"], "maas");
    let client = realm["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clientId"] == "maas-portal")
        .expect("the maas-portal client");
    assert_eq!(client["standardFlowEnabled"], true);
    assert_eq!(client["implicitFlowEnabled"], false);
    assert_eq!(client["directAccessGrantsEnabled"], false);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(client["redirectUris"][0], "${MAAS_PORTAL_PUBLIC_URL}/sso/callback");
    assert!(
        client["secret"].as_str().unwrap().starts_with("${"),
        "the secret comes from the environment"
    );
    let claims: Vec<&str> = client["protocolMappers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["config"]["claim.name"].as_str().unwrap())
        .collect();
    let defaults = maas_conf::MaasConfig::default();
    for claim in [defaults.sso.account_claim.as_str(), "email_verified", "groups"] {
        assert!(claims.contains(&claim), "{claim} in {claims:?}");
    }
    for mapper in client["protocolMappers"].as_array().unwrap() {
        assert_eq!(mapper["config"]["userinfo.token.claim"], "true", "{mapper}");
    }
    assert_eq!(realm["groups"][0]["name"], "maas-admins");
}
