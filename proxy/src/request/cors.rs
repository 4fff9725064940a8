//! CORS per product (the walkthrough's policy): preflights are answered by
//! the proxy; other responses get the allow headers for permitted origins.
//!
//! Whatever the policy lists, the headers the official OpenAI SDKs send
//! (`x-stainless-*` metadata, `openai-organization`, `openai-project`,
//! `openai-beta`, `x-request-id`) are allowed, and the headers they read
//! (`x-request-id`, `retry-after`, `x-should-retry`, `x-ratelimit-*`) are
//! exposed: without them the openai npm package cannot run in a browser,
//! and none of them grants anything.

/// Request headers OpenAI clients send: exact names, and prefixes ending in `-`.
const CLIENT_HEADERS: [&str; 5] = [
    "x-stainless-",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "x-request-id",
];

/// Response headers OpenAI clients read.
const CLIENT_READS: &str = "x-request-id, retry-after, x-should-retry, \
     x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, \
     x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens";

/// Whether a request header named in a preflight may be sent: the
/// policy lists it (`Name`, or a prefix `Name-*`), or OpenAI clients send it.
fn header_allowed(policy: &CorsPolicy, name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let matches = |allowed: &str| {
        let allowed = allowed.to_ascii_lowercase();
        match allowed.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == allowed,
        }
    };
    policy.allow_headers.iter().any(|a| matches(a))
        || CLIENT_HEADERS.iter().any(|c| {
            if c.ends_with('-') {
                name.starts_with(c)
            } else {
                name == *c
            }
        })
}

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
    let mut exposed = CLIENT_READS.to_owned();
    for header in &policy.expose_headers {
        exposed.push_str(", ");
        exposed.push_str(header);
    }
    headers.push(("access-control-expose-headers", exposed));
    headers
}

fn allow_origin_varies(policy: &CorsPolicy) -> bool {
    policy.allow_credentials || !policy.allow_origins.iter().any(|o| o == "*")
}

/// Headers of a preflight answer (204); `None` when the origin is refused.
/// `requested` is the preflight's `Access-Control-Request-Headers`: those
/// allowed are named back (a pattern such as `X-Stainless-*` cannot be).
pub fn preflight_headers(
    policy: &CorsPolicy,
    origin: &str,
    requested: Option<&str>,
) -> Option<Vec<(&'static str, String)>> {
    if !origin_allowed(policy, origin) {
        return None;
    }
    let mut headers = response_headers(policy, origin);
    headers.push(("access-control-allow-methods", policy.allow_methods.join(", ")));
    let mut allowed: Vec<&str> = policy
        .allow_headers
        .iter()
        .map(String::as_str)
        .filter(|h| !h.ends_with('*'))
        .collect();
    for name in requested
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if header_allowed(policy, name) && !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            allowed.push(name);
        }
    }
    headers.push(("access-control-allow-headers", allowed.join(", ")));
    headers.push(("access-control-max-age", policy.max_age_secs.to_string()));
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_the_walkthrough_one() {
        let policy = CorsPolicy::default();
        let headers = preflight_headers(&policy, "https://app.example.com", None).unwrap();
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
        assert!(preflight_headers(&policy, "https://evil.example.com", None).is_none());
        assert!(response_headers(&policy, "https://evil.example.com").is_empty());
        let headers = response_headers(&policy, "https://portal.example.com");
        assert!(headers.contains(&("access-control-allow-origin", "https://portal.example.com".into())));
        assert!(headers.contains(&("access-control-allow-credentials", "true".into())));
        assert!(headers.contains(&("vary", "Origin".into())));
    }

    #[test]
    fn openai_sdk_headers_are_allowed_and_what_it_reads_exposed() {
        let policy = CorsPolicy {
            allow_headers: vec!["Authorization".into(), "Content-Type".into(), "X-Team-*".into()],
            ..CorsPolicy::default()
        };
        let requested = "authorization, content-type, x-stainless-lang, X-Stainless-Retry-Count, \
                         openai-project, x-team-id, x-evil";
        let headers = preflight_headers(&policy, "https://app.example.com", Some(requested)).unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            get("access-control-allow-headers"),
            "Authorization, Content-Type, x-stainless-lang, X-Stainless-Retry-Count, openai-project, x-team-id"
        );
        let exposed = get("access-control-expose-headers");
        for header in [
            "x-request-id",
            "retry-after",
            "x-should-retry",
            "x-ratelimit-remaining-tokens",
        ] {
            assert!(exposed.contains(header), "{exposed}");
        }
    }
}
