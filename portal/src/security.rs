//! Web security every answer gets: response headers (pages, assets, the
//! API viewer's files and the admin API alike), who the client is behind
//! reverse proxies, and the rule for where `next=` may send a visitor
//! after signing in.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use maas_store::validate::IpRange;

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

pub async fn headers(State(csp): State<HeaderValue>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A page may set a policy of its own (the API reference's viewer).
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(csp);
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

/// The reverse proxies whose `X-Forwarded-For` is believed
/// (`portal.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpRange>);

impl TrustedProxies {
    pub fn parse(ranges: &[String]) -> Result<TrustedProxies, String> {
        ranges
            .iter()
            .map(|r| IpRange::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(address))
    }

    /// The client of a request that reached us from `peer`: the peer
    /// itself, unless it is a trusted proxy; then the nearest address in
    /// `X-Forwarded-For` (read right to left, as each proxy appends) that
    /// is not a trusted proxy. Anything left of it was written by the
    /// client and is not believed.
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut client = peer;
        for hop in forwarded_for.iter().rev().flat_map(|h| h.rsplit(',')) {
            let Some(address) = parse_hop(hop) else {
                // Garbage from here leftwards: stop at the last address we trust.
                break;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        Some(client)
    }
}

/// An `X-Forwarded-For` entry: an address, maybe with a port or brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse() {
        return Some(address);
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    hop.trim_start_matches('[').split(']').next()?.parse().ok()
}

/// The request's client address (see [`TrustedProxies::client`]).
pub fn client_address(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    trusted.client(peer, &forwarded)
}

/// The network a client's address stands for in sign-in limits: an IPv4
/// address itself, an IPv6 address's /64 (one host's, or one home's,
/// whole prefix: anyone given one has 2^64 addresses to rotate through).
pub fn network_of(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The client's address, when the server was started with connect info.
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<PortalState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<ClientAddress, Infallible> {
        Ok(ClientAddress(client_address(parts, &state.inner.trusted_proxies)))
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
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.5"), &["6.6.6.6"]),
            ip("10.0.0.5"),
            "nobody is trusted"
        );
        let ingress = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        assert_eq!(ingress.client(ip("10.0.0.5"), &["203.0.113.7"]), ip("203.0.113.7"));
        // A client's own X-Forwarded-For is left of what the ingress appended.
        assert_eq!(
            ingress.client(ip("10.0.0.5"), &["1.1.1.1, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            ingress.client(ip("10.0.0.5"), &["1.1.1.1", "203.0.113.7, 10.0.0.9"]),
            ip("203.0.113.7"),
            "several headers and proxies"
        );
        assert_eq!(
            ingress.client(ip("198.51.100.1"), &["1.1.1.1"]),
            ip("198.51.100.1"),
            "untrusted peer"
        );
        assert_eq!(ingress.client(ip("10.0.0.5"), &["garbage"]), ip("10.0.0.5"));
        assert_eq!(
            ingress.client(ip("10.0.0.5"), &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(ingress.client(ip("10.0.0.5"), &[]), ip("10.0.0.5"));
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let net = |s: &str| network_of(s.parse().unwrap());
        assert_eq!(net("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(net("2001:db8:1:3::1"), net("2001:db8:1:2::1"));
        assert_eq!(
            net("::ffff:192.0.2.7"),
            "192.0.2.7",
            "a mapped IPv4 address is that address"
        );
        assert_eq!(net("192.0.2.7"), "192.0.2.7");
        assert_ne!(net("192.0.2.8"), net("192.0.2.7"));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("/a?b=c&d"), "/a%3Fb%3Dc%26d");
        assert_eq!(encode_query_value("é"), "%C3%A9");
    }
}
