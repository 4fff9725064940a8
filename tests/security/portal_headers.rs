//! Security headers on every portal answer: pages, errors, the portal's
//! assets, Swagger UI's files (whose index page carries an inline script
//! the policy must forbid) and the admin API beside them.

use super::fixtures::{PortalProcess, gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_portal_answer_carries_the_security_headers() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::start(&gw, "");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/",
        "/sign-in",
        "/no-such-page",
        "/assets/portal.css",
        "/assets/portal.js",
        "/assets/brand.css",
        "/assets/api-viewer",
        "/assets/api-viewer/",
        "/assets/api-viewer/swagger-ui.css",
        "/assets/api-viewer/swagger-ui-bundle.js",
        "/assets/api-viewer/oauth2-redirect.html",
        "/admin/api/v1/docs",
        "/admin/api/v1/docs/assets/",
        "/admin/api/v1/docs/assets/swagger-ui-bundle.js",
        "/admin/api/v1/openapi.json",
        "/admin/api/v1/products",
        "/healthz",
    ] {
        let response = http.get(format!("{}{path}", portal.base)).send().await.unwrap();
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"))
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{path}: {name}"
            );
        }
    }
}
