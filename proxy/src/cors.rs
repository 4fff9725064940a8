//! CORS per product (the walkthrough's policy): preflights are answered by
//! the proxy; other responses get the allow headers for permitted origins.

use maas_store::model::CorsPolicy;

/// Whether `origin` may call the product.
pub fn origin_allowed(policy: &CorsPolicy, origin: &str) -> bool {
    policy
        .allow_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
}

/// Headers for a response to `origin`; empty when the origin is not allowed.
pub fn response_headers(policy: &CorsPolicy, origin: &str) -> Vec<(&'static str, String)> {
    if !origin_allowed(policy, origin) {
        return Vec::new();
    }
    // With credentials, `*` is not allowed by browsers: echo the origin.
    let allow_origin = if policy.allow_origins.iter().any(|o| o == "*") && !policy.allow_credentials {
        "*".to_owned()
    } else {
        origin.to_owned()
    };
    let mut headers = vec![("access-control-allow-origin", allow_origin)];
    if allow_origin_varies(policy) {
        headers.push(("vary", "Origin".to_owned()));
    }
    if policy.allow_credentials {
        headers.push(("access-control-allow-credentials", "true".to_owned()));
    }
    if !policy.expose_headers.is_empty() {
        headers.push(("access-control-expose-headers", policy.expose_headers.join(", ")));
    }
    headers
}

fn allow_origin_varies(policy: &CorsPolicy) -> bool {
    policy.allow_credentials || !policy.allow_origins.iter().any(|o| o == "*")
}

/// Headers of a preflight answer (204); `None` when the origin is refused.
pub fn preflight_headers(policy: &CorsPolicy, origin: &str) -> Option<Vec<(&'static str, String)>> {
    if !origin_allowed(policy, origin) {
        return None;
    }
    let mut headers = response_headers(policy, origin);
    headers.push(("access-control-allow-methods", policy.allow_methods.join(", ")));
    headers.push(("access-control-allow-headers", policy.allow_headers.join(", ")));
    headers.push(("access-control-max-age", policy.max_age_secs.to_string()));
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_the_walkthrough_one() {
        let policy = CorsPolicy::default();
        let headers = preflight_headers(&policy, "https://app.example.com").unwrap();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(get("access-control-allow-origin").as_deref(), Some("*"));
        assert_eq!(
            get("access-control-allow-headers").as_deref(),
            Some("Authorization, Content-Type, Accept")
        );
        assert_eq!(get("vary"), None);
    }

    #[test]
    fn listed_origins_and_credentials() {
        let policy = CorsPolicy {
            allow_origins: vec!["https://portal.example.com".into()],
            allow_credentials: true,
            ..CorsPolicy::default()
        };
        assert!(preflight_headers(&policy, "https://evil.example.com").is_none());
        assert!(response_headers(&policy, "https://evil.example.com").is_empty());
        let headers = response_headers(&policy, "https://portal.example.com");
        assert!(headers.contains(&("access-control-allow-origin", "https://portal.example.com".into())));
        assert!(headers.contains(&("access-control-allow-credentials", "true".into())));
        assert!(headers.contains(&("vary", "Origin".into())));
    }
}
