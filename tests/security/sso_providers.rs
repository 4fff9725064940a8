//! Class 13: company sign-in against providers set up otherwise than the
//! default. A provider that takes the client secret only in the token
//! request's body; RP-initiated logout whose `state` the portal checks when
//! the provider sends the browser back (a sign-out this browser did not
//! start is not confirmed); an issuer configured with a trailing slash the
//! provider's does not have, said as such.

use serde_json::json;

use super::fixtures::{Idp, PortalProcess, Visitor, gateway, sso_sign_in, sso_sign_in_and_out};
use crate::harness::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_takes_the_secret_only_in_the_body() {
    let (gw, _capture) = gateway(0).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start_with(&base, json!({}), &[("OIDC_TOKEN_AUTH", "client_secret_post")]).await;

    // By default the portal reads the provider's discovery document.
    for (method, signs_in) in [
        ("auto", true),
        ("client_secret_post", true),
        ("client_secret_basic", false),
    ] {
        let settings = format!("{}  token_auth_method: {method}\n", idp.settings());
        let portal = PortalProcess::start_at(&gw, port, &settings);
        let report = sso_sign_in(&portal.base, "ada").await;
        assert_eq!(report["session"].is_string(), signs_in, "{method}: {report}");
        if !signs_in {
            assert!(
                report["body"].as_str().unwrap().contains("did not accept the sign-in"),
                "{method}: {report}"
            );
        }
        drop(portal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_at_the_provider_returns_with_the_state_it_was_given() {
    let (gw, _capture) = gateway(0).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&base, json!({})).await;
    let portal = PortalProcess::start_at(&gw, port, &idp.settings());

    let report = sso_sign_in_and_out(&portal.base, "ada").await;
    let out = &report["signed_out"];
    let url = out["url"].as_str().unwrap_or_else(|| panic!("{report}"));
    assert!(
        url.starts_with(&format!("{base}/?state=")),
        "back with a state: {report}"
    );
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("You are signed out, here and at the company sign-in."),
        "{report}"
    );

    // A return this browser did not start (no cookie, or another state).
    let mut stranger = Visitor::new(&portal.base);
    let page = stranger.get("/?state=forged").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("did not start"), "{}", page.body);
    assert!(!page.body.contains("You are signed out"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_that_differs_by_a_trailing_slash_is_named() {
    let (gw, _capture) = gateway(0).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&base, json!({})).await;
    let settings = idp.settings().replace(&idp.issuer, &format!("{}/", idp.issuer));
    let portal = PortalProcess::start_at(&gw, port, &settings);
    let mut visitor = Visitor::new(&portal.base);
    let page = visitor.get("/sso/login").await;
    assert_eq!(page.status, 502, "{}", page.body);
    let body = page.body.replace("&#x2f;", "/");
    assert!(
        body.contains("differ by a trailing slash")
            && body.contains(&format!("set sso.issuer_url to `{}`", idp.issuer)),
        "{body}"
    );
}
