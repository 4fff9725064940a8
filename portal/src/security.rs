//! Web security every page gets: response headers, and the rule for
//! where `next=` may send a visitor after signing in.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::PortalState;

/// Only the portal's own scripts, styles and images; no framing; forms post
/// only here, or (sign-out) lead on to the OpenID provider at
/// `provider_origin`. No inline script or style anywhere, so an injected
/// tag that escaped escaping still would not run.
pub fn content_security_policy(provider_origin: Option<&str>) -> HeaderValue {
    let form_action = match provider_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action {form_action}"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// The scheme, host and port of `url` (for a CSP source), if it is one.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    (matches!(scheme, "http" | "https") && !host.is_empty() && host.chars().all(safe))
        .then(|| format!("{scheme}://{host}"))
}

pub async fn headers(State(state): State<PortalState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A page may set a policy of its own (the API reference's viewer).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert_with(|| state.inner.csp.clone());
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages show keys and account data: never from a shared cache.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The client's address, when the server was started with connect info.
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientAddress, Infallible> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
        ))
    }
}

/// Where to go after signing in: `next` if it is a path of this portal,
/// else `fallback`. Refuses other hosts (`https://evil.example`,
/// `//evil.example`, `/\evil.example`), schemes, and control characters.
pub fn safe_next<'a>(next: Option<&'a str>, fallback: &'a str) -> &'a str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control)
                && path.len() <= 2048 =>
        {
            path
        }
        _ => fallback,
    }
}

/// `value` percent-encoded for a query string.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_portal() {
        for own in ["/applications", "/applications/app_1?tab=keys", "/"] {
            assert_eq!(safe_next(Some(own), "/home"), own);
        }
        for foreign in [
            "https://evil.example",
            "//evil.example/x",
            "/\\evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/a\nSet-Cookie: x=1",
            "",
        ] {
            assert_eq!(safe_next(Some(foreign), "/home"), "/home", "{foreign:?}");
        }
        assert_eq!(safe_next(None, "/home"), "/home");
    }

    #[test]
    fn the_provider_is_a_form_target_only_when_configured() {
        let own = content_security_policy(None);
        assert!(own.to_str().unwrap().ends_with("form-action 'self'"));
        let sso = content_security_policy(origin("https://sso.example.com/realms/maas").as_deref());
        assert!(
            sso.to_str()
                .unwrap()
                .ends_with("form-action 'self' https://sso.example.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8443/x?y"),
            Some("http://127.0.0.1:8443".into())
        );
        assert_eq!(origin("https://a b/"), None);
        assert_eq!(origin("javascript:alert(1)"), None);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("/a?b=c&d"), "/a%3Fb%3Dc%26d");
        assert_eq!(encode_query_value("é"), "%C3%A9");
    }
}
