//! Proxies' reports of live replica state: one per proxy, the latest
//! wins, silent proxies are marked and long-gone ones forgotten.

use time::Duration;

use super::{Fixture, open};
use crate::store::{
    BackendReport, PROXY_FORGOTTEN_AFTER_SECS, PROXY_SILENT_AFTER_SECS, ProxyReport, ReplicaLoadReport, ReplicaReport,
};

fn report(proxy: &str, in_flight: u32) -> ProxyReport {
    ProxyReport {
        proxy: proxy.to_owned(),
        reported_at: 0,
        catalog_revision: 7,
        backends: vec![BackendReport {
            backend: "vllm".into(),
            queued: 2,
            replicas: vec![
                ReplicaReport {
                    url: "http://10.0.0.1:8000".into(),
                    up: true,
                    in_flight,
                    load: Some(ReplicaLoadReport {
                        waiting: 1,
                        running: 30,
                        kv_cache_percent: 41.5,
                        age_ms: 120,
                    }),
                    last_error: None,
                    last_error_at: None,
                },
                ReplicaReport {
                    url: "http://10.0.0.2:8000".into(),
                    up: false,
                    in_flight: 0,
                    load: None,
                    last_error: Some("connection refused".into()),
                    last_error_at: Some(1_700_000_000),
                },
            ],
        }],
    }
}

pub async fn proxy_reports_are_kept_per_proxy_and_forgotten<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    assert!(store.proxy_reports().await.unwrap().is_empty());
    store.report_proxy(report("host-b:8080", 3)).await.unwrap();
    store.report_proxy(report("host-a:8080", 1)).await.unwrap();
    clock.advance(Duration::seconds(5));
    store.report_proxy(report("host-b:8080", 9)).await.unwrap();
    let reports = store.proxy_reports().await.unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.proxy.as_str()).collect();
    assert_eq!(names, ["host-a:8080", "host-b:8080"], "one each, by name");
    let now = store.clock().now().unix_timestamp();
    let latest = &reports[1];
    assert_eq!(latest.backends[0].replicas[0].in_flight, 9, "the latest report wins");
    assert_eq!(latest.reported_at, now, "stamped by the store's clock");
    assert_eq!(
        latest.backends[0],
        report("x", 9).backends[0],
        "every field round-trips"
    );
    assert!(!latest.is_silent(now));

    clock.advance(Duration::seconds(PROXY_SILENT_AFTER_SECS));
    store.report_proxy(report("host-b:8080", 0)).await.unwrap();
    let now = store.clock().now().unix_timestamp();
    let reports = store.proxy_reports().await.unwrap();
    assert!(reports[0].is_silent(now), "host-a stopped reporting");
    assert!(!reports[1].is_silent(now));

    clock.advance(Duration::seconds(PROXY_FORGOTTEN_AFTER_SECS - 10));
    store.report_proxy(report("host-b:8080", 0)).await.unwrap();
    let names: Vec<String> = store
        .proxy_reports()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.proxy)
        .collect();
    assert_eq!(names, ["host-b:8080"], "a proxy gone for an hour is forgotten");
    store.report_proxy(report("host-a:8080", 0)).await.unwrap();
    assert_eq!(
        store.proxy_reports().await.unwrap().len(),
        2,
        "and comes back when it reports"
    );

    assert!(store.report_proxy(report("", 0)).await.is_err());
    assert!(store.report_proxy(report(&"x".repeat(201), 0)).await.is_err());
}
