//! Broken files are rejected with `file:line: field: reason`.

use maas_conf::{ConfigError, FileKind, detect_kind, load_config, parse_catalog, parse_config};

const GOOD_CATALOG: &str = "\
backends:
  - system_name: vllm
    urls: [http://127.0.0.1:8000]
products:
  - system_name: granite
    backend: vllm
    models: [granite]
plans:
  - product: granite
    system_name: standard
    limits:
      - {metric: hits, period: minute, value: 10}
";

/// The single error of `text`, as printed.
fn catalog_error(text: &str) -> String {
    let errors = parse_catalog("catalog.yaml", text).expect_err("the file is broken");
    assert_eq!(errors.0.len(), 1, "one mistake, one error: {errors}");
    errors.0[0].to_string()
}

fn config_error(text: &str) -> ConfigError {
    let mut errors = parse_config("maas.yaml", text).expect_err("the file is broken").0;
    assert_eq!(errors.len(), 1, "one mistake, one error: {errors:?}");
    errors.remove(0)
}

#[test]
fn the_good_catalog_parses() {
    let document = parse_catalog("catalog.yaml", GOOD_CATALOG).unwrap();
    assert_eq!(document.plans[0].limits[0].value, 10);
}

#[test]
fn syntax_error() {
    let text = GOOD_CATALOG.replace("    urls: [http://127.0.0.1:8000]", "    urls: [http://127.0.0.1:8000");
    let error = catalog_error(&text);
    assert!(error.starts_with("catalog.yaml:4: invalid YAML: "), "{error}");
}

#[test]
fn unknown_field() {
    let text = GOOD_CATALOG.replace("    models: [granite]", "    models: [granite]\n    modles: [typo]");
    let error = catalog_error(&text);
    assert!(
        error.starts_with("catalog.yaml:8: products[0].modles: unknown field `modles`"),
        "{error}"
    );
}

#[test]
fn wrong_type() {
    let text = GOOD_CATALOG.replace("value: 10", "value: ten");
    let error = catalog_error(&text);
    assert!(
        error.starts_with("catalog.yaml:12: plans[0].limits[0].value: invalid type"),
        "{error}"
    );
}

#[test]
fn missing_required_field() {
    let text = GOOD_CATALOG.replace("    backend: vllm\n", "");
    let error = catalog_error(&text);
    assert_eq!(error, "catalog.yaml:5: products[0]: missing field `backend`");
}

#[test]
fn unknown_enum_value() {
    let text = GOOD_CATALOG.replace("period: minute", "period: fortnight");
    let error = catalog_error(&text);
    assert!(
        error.starts_with("catalog.yaml:12: plans[0].limits[0].period: unknown variant `fortnight`"),
        "{error}"
    );
}

#[test]
fn dangling_reference() {
    let text = GOOD_CATALOG.replace("    backend: vllm", "    backend: tgi");
    assert_eq!(
        catalog_error(&text),
        "catalog.yaml:6: products[0].backend: no backend named `tgi`"
    );
}

#[test]
fn limit_not_positive() {
    let text = GOOD_CATALOG.replace("value: 10", "value: 0");
    let error = catalog_error(&text);
    assert!(
        error.starts_with("catalog.yaml:12: plans[0].limits[0].value: must be at least 1"),
        "{error}"
    );
}

#[test]
fn duplicate_system_name() {
    let text = format!("{GOOD_CATALOG}  - product: granite\n    system_name: standard\n");
    assert_eq!(
        catalog_error(&text),
        "catalog.yaml:14: plans[1].system_name: duplicate plan `standard` of product `granite`"
    );
}

#[test]
fn bad_mapping_rule_pattern() {
    let text = GOOD_CATALOG.replace(
        "    models: [granite]",
        "    models: [granite]\n    methods: [{system_name: chat}]\n    mapping_rules:\n      - {http_method: POST, pattern: \"/v1/{x\", metric: chat}",
    );
    let error = catalog_error(&text);
    assert!(
        error.starts_with("catalog.yaml:10: products[0].mapping_rules[0].pattern: unclosed `{`"),
        "{error}"
    );
}

#[test]
fn config_mistakes_name_file_line_and_field() {
    let error = config_error("proxy:\n  listen: 0.0.0.0:8080\n  lissen: 1\n");
    assert_eq!((error.line, error.field.as_str()), (Some(3), "proxy.lissen"));

    let error = config_error("proxy:\n  listen: not-an-address\n");
    assert_eq!((error.line, error.field.as_str()), (Some(2), "proxy.listen"));
    assert!(error.message.contains("invalid socket address"), "{}", error.message);

    let error = config_error("limits:\n  mode: sloppy\n");
    assert_eq!((error.line, error.field.as_str()), (Some(2), "limits.mode"));

    let error = config_error("sso:\n  enabled: true\n  client_id: maas\n");
    assert_eq!((error.line, error.field.as_str()), (Some(1), "sso.issuer_url"));
    assert_eq!(
        error.to_string(),
        "maas.yaml:1: sso.issuer_url: required when SSO is enabled"
    );

    let error = config_error("portal:\n  local_accounts: false\n");
    assert_eq!((error.line, error.field.as_str()), (Some(2), "portal.local_accounts"));
    assert!(error.message.contains("nobody can sign in"), "{}", error.message);

    let error = config_error("proxy:\n  report_interval_ms: 99\n");
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(2), "proxy.report_interval_ms")
    );
    for fine in ["0", "100"] {
        assert!(parse_config("maas.yaml", &format!("proxy:\n  report_interval_ms: {fine}\n")).is_ok());
    }

    let error = config_error("logging:\n  level: loud\n");
    assert_eq!((error.line, error.field.as_str()), (Some(2), "logging.level"));

    let error = config_error("store:\n  backend: redis\n");
    assert_eq!(
        error.to_string(),
        "maas.yaml:1: store.redis_url: required for the Redis store (or set MAAS_REDIS_URL)"
    );

    let error = config_error("store:\n  redis_url: redis://cache:6379\n  redis_tls_ca_file: ca.crt\n");
    assert_eq!(
        error.to_string(),
        "maas.yaml:3: store.redis_tls_ca_file: only applies to a TLS store.redis_url (rediss://, rediss+sentinel://, rediss+cluster://)"
    );
    // Sentinel and Cluster URLs: what is wrong, on the URL's line.
    let error = config_error("store:\n  redis_url: redis+sentinel://s1:26379,s2:26379\n");
    assert_eq!((error.line, error.field.as_str()), (Some(2), "store.redis_url"));
    assert!(error.message.contains("names the master"), "{}", error.message);
    let error = config_error("store:\n  redis_url: redis+sentinel://:secret@s1/m?password=x\n");
    assert!(
        error.message.contains("unknown parameter `password`"),
        "{}",
        error.message
    );
    assert!(!error.to_string().contains("secret"), "{error}");
    let error = config_error("store:\n  redis_url: redis+cluster://a:7000,b:70000\n");
    assert!(error.message.contains("`b:70000`: the port"), "{}", error.message);
    let error = config_error("store:\n  redis_url: sentinel://s1/m\n");
    assert!(error.message.contains("unknown scheme `sentinel`"), "{}", error.message);
    let error = config_error("store:\n  redis_url: redis+cluster://a:7000\n  redis_tls_ca_file: ca.crt\n");
    assert_eq!(error.field, "store.redis_tls_ca_file");
    let error = config_error("store:\n  redis_url: rediss://cache:6380\n  redis_tls_cert_file: client.crt\n");
    assert_eq!(
        error.to_string(),
        "maas.yaml:1: store.redis_tls_key_file: required with store.redis_tls_cert_file (the client certificate's key)"
    );
    // What the proxy does when Redis fails: each setting checked, by line.
    let error = config_error("store:\n  outage: serve_stale\n");
    assert!(
        error
            .to_string()
            .starts_with("maas.yaml:2: store.outage: unknown variant `serve_stale`"),
        "{error}"
    );
    let error = config_error("store:\n  redis_url: redis://cache:6379\n  timeout_ms: 0\n");
    assert_eq!(
        error.to_string(),
        "maas.yaml:3: store.timeout_ms: must be between 10 and 60000"
    );
    let error = config_error("store:\n  breaker_failures: 0\n");
    assert_eq!(
        error.to_string(),
        "maas.yaml:2: store.breaker_failures: must be between 1 and 1000"
    );
    let error = config_error("store:\n  spool_fsync: sometimes\n");
    assert!(
        error
            .to_string()
            .starts_with("maas.yaml:2: store.spool_fsync: unknown variant"),
        "{error}"
    );
    let config = parse_config(
        "maas.yaml",
        "store:\n  outage: fail_closed\n  spool_dir: /var/spool/maas\n",
    )
    .unwrap();
    assert_eq!(config.store.outage, maas_conf::OutageMode::FailClosed);
    assert_eq!(
        config.store.spool_dir.as_deref(),
        Some(std::path::Path::new("/var/spool/maas"))
    );
    let tls = "store:\n  redis_url: rediss://cache:6380\n  redis_tls_ca_file: ca.crt\n  redis_tls_cert_file: c.crt\n  redis_tls_key_file: c.key\n";
    let config = parse_config("maas.yaml", tls).unwrap();
    let maas_store::StoreLocation::Redis { tls, .. } = config.store.location() else {
        panic!("a Redis store");
    };
    assert_eq!(tls.ca_file.unwrap(), std::path::Path::new("ca.crt"));
    assert_eq!(
        (tls.cert_file.unwrap().to_str(), tls.key_file.unwrap().to_str()),
        (Some("c.crt"), Some("c.key"))
    );
    for url in [
        "redis+sentinel://:pw@s1:26379,s2:26379,s3:26379/mymaster/2?sentinel_password=pw2",
        "rediss+sentinel://s1/mymaster",
        "redis+cluster://u:pw@n1:7000,n2:7001,n3:7002",
    ] {
        let config = parse_config("maas.yaml", &format!("store:\n  redis_url: {url}\n")).unwrap();
        assert_eq!(config.store.kind(), maas_conf::StoreKind::Redis, "{url}");
    }
}

#[test]
fn empty_config_is_all_defaults() {
    let config = parse_config("maas.yaml", "# nothing\n").unwrap();
    assert_eq!(config, maas_conf::MaasConfig::default());
    assert_eq!(config.proxy.listen.port(), 8080);
    assert_eq!(config.proxy.metrics_listen.port(), 9421);
    assert_eq!(config.portal.listen.port(), 3000);
}

#[test]
fn environment_overrides_and_secrets() {
    let env = |name: &str| match name {
        "MAAS_PROXY_LISTEN" => Some("127.0.0.1:18080".to_owned()),
        "MAAS_REDIS_URL" => Some("redis://:hunter2@127.0.0.1:6379".to_owned()),
        "MAAS_ADMIN_TOKEN" => Some("admin-secret".to_owned()),
        "MAAS_DATA_DIR" => Some("/var/lib/maas".to_owned()),
        _ => None,
    };
    let config = load_config(None, &env).unwrap();
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:18080");
    assert_eq!(
        config.store.kind(),
        maas_conf::StoreKind::Redis,
        "a Redis URL selects Redis"
    );
    assert_eq!(config.secrets.admin_token.as_ref().unwrap().expose(), "admin-secret");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("admin-secret"),
        "secrets never print: {debug}"
    );

    let bad = |name: &str| (name == "MAAS_METRICS_LISTEN").then(|| "9421".to_owned());
    let errors = load_config(None, &bad).unwrap_err();
    assert_eq!(errors.0[0].field, "MAAS_METRICS_LISTEN");
    assert!(
        errors
            .to_string()
            .starts_with("environment: MAAS_METRICS_LISTEN: `9421`"),
        "{errors}"
    );

    let sso = |name: &str| match name {
        "MAAS_SSO_ISSUER_URL" => Some("http://127.0.0.1:9000".to_owned()),
        "MAAS_SSO_CLIENT_ID" => Some("maas".to_owned()),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maas.yaml");
    std::fs::write(&path, "sso:\n  enabled: true\n").unwrap();
    let errors = load_config(Some(&path), &sso).unwrap_err();
    assert!(errors.to_string().contains("MAAS_SSO_CLIENT_SECRET"), "{errors}");
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "sso:\n  enabled: true\n  client_secret_file: {}\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let config = load_config(Some(&path), &sso).unwrap();
    assert_eq!(config.secrets.sso_client_secret.unwrap().expose(), "s3cret");
}

#[test]
fn shipped_files_are_valid_and_recognized() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, kind) in [
        ("maas.yaml", FileKind::Config),
        ("catalog.yaml", FileKind::Catalog),
        ("catalog.demo.yaml", FileKind::Catalog),
    ] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        assert_eq!(detect_kind(&text), kind, "{name}");
        match kind {
            FileKind::Config => assert_eq!(
                parse_config(name, &text).unwrap(),
                maas_conf::MaasConfig::default(),
                "maas.yaml shows the defaults"
            ),
            FileKind::Catalog => drop(parse_catalog(name, &text).unwrap()),
        }
    }
}

#[test]
fn exported_yaml_reads_back_equal() {
    let document = parse_catalog("catalog.yaml", maas_conf::DEMO_CATALOG).unwrap();
    let yaml = maas_conf::catalog_to_yaml(&document);
    assert_eq!(parse_catalog("export.yaml", &yaml).unwrap(), document);
}

/// Every type mistake of a file in one run, each with its line, in the
/// file's numbering even after earlier list items were found broken.
#[test]
fn every_type_error_of_a_file_is_reported_at_once() {
    let errors = parse_config(
        "maas.yaml",
        "proxy:\n  listen: 5\n  max_body_bytes: x\nportal:\n  session_ttl_hours: [1]\n",
    )
    .unwrap_err();
    let found: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "maas.yaml:2: proxy.listen: invalid socket address syntax",
            "maas.yaml:3: proxy.max_body_bytes: invalid type: string \"x\", expected u64",
            "maas.yaml:5: portal.session_ttl_hours: invalid type: sequence, expected u32",
        ]
    );

    let text = "\
backends:
  - system_name: a
    urls: 5
  - system_name: b
    urls: [http://127.0.0.1:1]
    bogus: 1
  - system_name: 7
    urls: [http://127.0.0.1:2]
products:
  - {system_name: p, backend: b, models: [m]}
  - {system_name: q, backend: {x: 1}}
";
    let errors = parse_catalog("catalog.yaml", text).unwrap_err();
    let found: Vec<(Option<usize>, &str)> = errors.0.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        found,
        [
            (Some(3), "backends[0].urls"),
            (Some(6), "backends[1].bogus"),
            (Some(11), "products[1].backend"),
        ],
        "a number where a name goes is read as the name, as in the first pass: {errors}"
    );
    assert!(errors.0[1].message.starts_with("unknown field `bogus`"), "{errors}");
}

#[test]
fn an_alert_webhook_needs_a_secret_and_an_http_url() {
    let without_secret = |name: &str| match name {
        "MAAS_ALERTS_WEBHOOK_URL" => Some("https://hooks.example.com/maas".to_owned()),
        _ => None,
    };
    let errors = load_config(None, &without_secret).unwrap_err();
    assert!(errors.to_string().contains("MAAS_ALERTS_WEBHOOK_SECRET"), "{errors}");
    let complete = |name: &str| match name {
        "MAAS_ALERTS_WEBHOOK_URL" => Some("https://hooks.example.com/maas".to_owned()),
        "MAAS_ALERTS_WEBHOOK_SECRET" => Some("whsec".to_owned()),
        "MAAS_ALERTS_INTERVAL_MS" => Some("250".to_owned()),
        _ => None,
    };
    let config = load_config(None, &complete).unwrap();
    assert_eq!(config.alerts.interval_ms, 250);
    assert_eq!(config.secrets.alerts_webhook_secret.unwrap().expose(), "whsec");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maas.yaml");
    std::fs::write(&path, "alerts:\n  webhook_url: ftp://x\n  interval_ms: 10\n").unwrap();
    let secret_only = |name: &str| (name == "MAAS_ALERTS_WEBHOOK_SECRET").then(|| "whsec".to_owned());
    let errors = load_config(Some(&path), &secret_only).unwrap_err().to_string();
    assert!(errors.contains("alerts.webhook_url"), "{errors}");
    assert!(errors.contains("alerts.interval_ms"), "{errors}");
}

/// Access tokens and telemetry: each mistake named by its field and line,
/// no HMAC or `none` algorithm, an issuer taken from SSO when not given.
#[test]
fn access_tokens_and_telemetry_are_checked_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maas.yaml");
    std::fs::write(
        &path,
        "access_tokens:\n  enabled: true\n  algorithms: [RS256, HS256]\n  leeway_secs: 900\n\
         telemetry:\n  otlp_endpoint: grpc://collector:4317\n  trace_sample_ratio: 1.5\n",
    )
    .unwrap();
    let errors = load_config(Some(&path), &|_: &str| None).unwrap_err().to_string();
    for expected in [
        "access_tokens.issuer_url",
        "access_tokens.audience",
        "access_tokens.algorithms[1]",
        "access_tokens.leeway_secs",
        "telemetry.otlp_endpoint",
        "telemetry.trace_sample_ratio",
    ] {
        assert!(errors.contains(expected), "{expected}: {errors}");
    }
    assert!(
        errors.contains("maas.yaml:3: access_tokens.algorithms[1]"),
        "names the line: {errors}"
    );
    let from_env = |name: &str| match name {
        "MAAS_ACCESS_TOKENS_ENABLED" => Some("true".to_owned()),
        "MAAS_ACCESS_TOKENS_AUDIENCE" => Some("https://maas.example.com".to_owned()),
        "MAAS_SSO_ISSUER_URL" => Some("https://idp.example.com/realms/maas".to_owned()),
        "MAAS_TRACE_SAMPLE_RATIO" => Some("0.25".to_owned()),
        "MAAS_OTLP_ENDPOINT" => Some("http://collector:4318".to_owned()),
        _ => None,
    };
    let config = load_config(None, &from_env).unwrap();
    assert_eq!(
        config.access_token_issuer(),
        Some("https://idp.example.com/realms/maas")
    );
    assert_eq!(config.access_token_organization_claim(), "org_name");
    assert!(config.telemetry.traces());
}
