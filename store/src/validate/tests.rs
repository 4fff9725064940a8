//! Unit tests of catalog validation.

use super::*;
use crate::model::{CredentialLocation, HttpMethod, Method, UsageLimit};
use crate::period::Period;

fn backend(name: &str) -> Backend {
    serde_json::from_value(serde_json::json!({"system_name": name, "urls": ["http://127.0.0.1:8000"]})).unwrap()
}
fn product(name: &str, backend: &str) -> Product {
    serde_json::from_value(serde_json::json!({"system_name": name, "backend": backend, "models": ["m"]})).unwrap()
}
fn plan(product: &str, name: &str) -> Plan {
    serde_json::from_value(serde_json::json!({"product": product, "system_name": name})).unwrap()
}
fn paths(result: Result<(), ValidationErrors>) -> Vec<String> {
    result.unwrap_err().0.into_iter().map(|e| e.path).collect()
}

#[test]
fn a_consistent_catalog_passes() {
    let mut p = plan("granite", "standard");
    p.limits.push(UsageLimit {
        metric: "v1-chat-completions".into(),
        period: Period::Minute,
        value: 10,
    });
    validate_catalog(&[backend("vllm")], &[product("granite", "vllm")], &[p], &ByIndex).unwrap();
}

#[test]
fn references_must_resolve() {
    let mut p = plan("nope", "standard");
    p.limits.push(UsageLimit {
        metric: "hits".into(),
        period: Period::Day,
        value: 1,
    });
    let mut q = plan("granite", "gold");
    q.limits.push(UsageLimit {
        metric: "v1-unknown".into(),
        period: Period::Day,
        value: 1,
    });
    let got = paths(validate_catalog(
        &[backend("vllm")],
        &[product("granite", "missing")],
        &[p, q],
        &ByIndex,
    ));
    assert_eq!(
        got,
        ["products[0].backend", "plans[0].product", "plans[1].limits[0].metric"]
    );
}

#[test]
fn names_must_be_unique_and_well_formed() {
    let got = paths(validate_catalog(
        &[backend("vllm"), backend("vllm"), backend("Bad Name")],
        &[product("a", "vllm"), product("a", "vllm")],
        &[plan("a", "p"), plan("a", "p")],
        &ByName,
    ));
    assert_eq!(
        got,
        [
            "backends[vllm].system_name",
            "backends[Bad Name].system_name",
            "products[a].system_name",
            "plans[a/p].system_name"
        ]
    );
}

#[test]
fn limits_must_be_positive_and_single() {
    let mut p = plan("granite", "standard");
    p.limits.push(UsageLimit {
        metric: "hits".into(),
        period: Period::Minute,
        value: 0,
    });
    p.limits.push(UsageLimit {
        metric: "hits".into(),
        period: Period::Minute,
        value: 5,
    });
    p.max_tokens = Some(0);
    p.currency = "usd".into();
    let got = paths(validate_catalog(
        &[backend("vllm")],
        &[product("granite", "vllm")],
        &[p],
        &ByIndex,
    ));
    assert_eq!(
        got,
        [
            "plans[0].limits[0].value",
            "plans[0].limits[1].period",
            "plans[0].max_tokens",
            "plans[0].currency"
        ]
    );
}

#[test]
fn product_fields_are_checked() {
    let mut p = product("granite", "vllm");
    p.path_prefix = Some("/v1".into());
    p.hosts = vec!["bad host".into()];
    p.models.push("m".into());
    p.credentials.locations = vec![CredentialLocation::Basic, CredentialLocation::Basic];
    p.methods.push(Method {
        system_name: "chat".into(),
        friendly_name: String::new(),
        description: String::new(),
    });
    p.mapping_rules.push(MappingRule {
        http_method: HttpMethod::Post,
        pattern: "/v1/chat/{".into(),
        metric: "total_tokens".into(),
        increment: 0,
        last: false,
        unmetered: false,
    });
    let got = paths(validate_catalog(&[backend("vllm")], &[p], &[], &ByIndex));
    assert_eq!(
        got,
        [
            "products[0].path_prefix",
            "products[0].hosts[0]",
            "products[0].models[1]",
            "products[0].credentials.locations[1]",
            "products[0].mapping_rules[0].pattern",
            "products[0].mapping_rules[0].metric",
            "products[0].mapping_rules[0].increment"
        ]
    );
}

#[test]
fn prefixes_hosts_and_defaults_are_exclusive() {
    let mut a = product("a", "vllm");
    let mut b = product("b", "vllm");
    a.path_prefix = Some("/x".into());
    b.path_prefix = Some("/x".into());
    a.hosts = vec!["api.example.com".into()];
    b.hosts = vec!["API.example.com".into()];
    let mut p = plan("a", "one");
    let mut q = plan("a", "two");
    p.default = true;
    q.default = true;
    let got = paths(validate_catalog(&[backend("vllm")], &[a, b], &[p, q], &ByIndex));
    assert_eq!(
        got,
        ["products[1].path_prefix", "products[1].hosts[0]", "plans[1].default"]
    );
}

#[test]
fn backend_urls_are_checked() {
    let mut b = backend("vllm");
    b.urls = vec![
        "ftp://x".into(),
        "http://a:1".into(),
        "http://a:1/".into(),
        "http://h/?q=1".into(),
    ];
    b.timeouts.read_ms = 0;
    b.api_key_env = Some("lower".into());
    b.health_check = Some(crate::model::HealthCheck {
        interval_ms: 10,
        healthy_after: 0,
        ..Default::default()
    });
    let got = paths(validate_catalog(&[b], &[], &[], &ByIndex));
    assert_eq!(
        got,
        [
            "backends[0].urls[0]",
            "backends[0].urls[2]",
            "backends[0].urls[3]",
            "backends[0].timeouts.read_ms",
            "backends[0].health_check.interval_ms",
            "backends[0].health_check.healthy_after",
            "backends[0].api_key_env"
        ]
    );
}

#[test]
fn ip_ranges_parse_and_match() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let private = IpRange::parse("10.0.0.0/8").unwrap();
    assert!(private.contains(ip("10.1.2.3")));
    assert!(!private.contains(ip("11.0.0.1")));
    assert!(private.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped addresses match");
    let one = IpRange::parse("127.0.0.1").unwrap();
    assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
    assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    assert!(IpRange::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
    assert!(!IpRange::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
    for bad in ["10.0.0.0/33", "::/129", "localhost", "10.0.0/8", ""] {
        assert!(IpRange::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn saturation_thresholds_and_queue_bounds_are_checked() {
    let mut b = backend("gpu");
    b.saturation = Some(crate::model::Saturation {
        waiting: 0,
        kv_cache_percent: 101,
        in_flight: Some(0),
    });
    let mut p = product("chat", "gpu");
    p.queue = crate::model::QueuePolicy {
        max_queue_ms: 600_001,
        max_waiting: 0,
    };
    let got = paths(validate_catalog(&[b], &[p], &[], &ByIndex));
    assert_eq!(
        got,
        [
            "backends[0].saturation.waiting",
            "backends[0].saturation.kv_cache_percent",
            "backends[0].saturation.in_flight",
            "products[0].queue.max_queue_ms",
            "products[0].queue.max_waiting",
        ]
    );
    let mut b = backend("gpu");
    b.saturation = Some(crate::model::Saturation::default());
    assert!(validate_catalog(&[b], &[product("chat", "gpu")], &[], &ByIndex).is_ok());
}

#[test]
fn token_access_names_real_plans() {
    let mut p = product("granite", "vllm");
    p.auth = vec![crate::model::AuthMethod::ApiKey, crate::model::AuthMethod::Oidc];
    p.token_plans = serde_json::from_value(serde_json::json!([
        {"group": "ml-platform", "plan": "gold"}, {"plan": "standard"}, {"group": " ", "plan": "standard"}
    ]))
    .unwrap();
    let errors = paths(validate_catalog(
        &[backend("vllm")],
        &[p.clone()],
        &[plan("granite", "standard")],
        &ByIndex,
    ));
    assert_eq!(
        errors,
        ["products[0].token_plans[2].group", "products[0].token_plans[0].plan"]
    );

    p.token_plans.clear();
    p.auth.push(crate::model::AuthMethod::Oidc);
    let errors = paths(validate_catalog(&[backend("vllm")], &[p.clone()], &[], &ByIndex));
    assert_eq!(errors, ["products[0].auth[2]", "products[0].token_plans"]);

    let mut keys_only = product("granite", "vllm");
    keys_only.token_plans = serde_json::from_value(serde_json::json!([{"plan": "standard"}])).unwrap();
    let errors = paths(validate_catalog(
        &[backend("vllm")],
        &[keys_only],
        &[plan("granite", "standard")],
        &ByIndex,
    ));
    assert_eq!(errors, ["products[0].token_plans"]);
    let mut none = product("granite", "vllm");
    none.auth.clear();
    assert_eq!(
        paths(validate_catalog(&[backend("vllm")], &[none], &[], &ByIndex)),
        ["products[0].auth"]
    );
}
