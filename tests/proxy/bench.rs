//! The side-by-side benchmark (`loadtest/compare.py --smoke`) end to end, in
//! seconds, with this build's `maas`: `maas bench` loads the simulator
//! directly, nginx and the proxy; the tables, JSON and chart are written;
//! slow streams are held open and a storm of made-up keys never reaches
//! the store.

use std::process::Command;

/// Runs `loadtest/<script> <args> --out <out>` with this build's `maas`;
/// its output, after asserting it succeeded.
fn run_loadtest_script(script: &str, args: &[&str], out: &std::path::Path) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = Command::new("python3")
        .arg(format!("{root}/loadtest/{script}"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env("MAAS_BIN", env!("CARGO_BIN_EXE_maas"))
        .output()
        .expect("python3 runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{script} failed:\n{log}");
    log
}

#[test]
fn the_side_by_side_benchmark_runs_in_smoke_mode() {
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
        || std::path::Path::new("/usr/sbin/nginx").exists();
    assert!(
        nginx,
        "this test needs nginx: `apt install nginx-light` (.ci/run installs it)"
    );
    let out = tempfile::tempdir().unwrap();
    run_loadtest_script("compare.py", &["--smoke"], out.path());

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("compare.json")).unwrap()).unwrap();
    let rows = &json["rows"];
    for path in ["direct", "nginx", "pingora", "maas"] {
        for figure in [
            "one_p50",
            "one_p99",
            "c1_p50",
            "c64_rps",
            "ttft_p99",
            "chunk_delay_p99",
            "gap_p99",
        ] {
            assert!(
                rows[path][figure].as_f64().is_some_and(|v| v > 0.0),
                "{path} {figure}: {json}"
            );
        }
    }
    for path in ["nginx", "pingora", "maas"] {
        assert!(
            rows[path]["cpu_ms_per_1k"].as_f64().is_some_and(|v| v > 0.0),
            "{path}: {json}"
        );
        assert!(
            rows[path]["rss_mib"].as_f64().is_some_and(|v| v > 1.0),
            "{path}: {json}"
        );
    }
    // The stamped stream lets the path's share of TTFT be told apart.
    for path in ["direct", "maas"] {
        assert!(
            rows[path]["ttft_path_p99"].as_f64().is_some_and(|v| v > 0.0),
            "{path}: {json}"
        );
    }

    let scale = &json["scale"];
    let streams = scale["streams"].as_u64().unwrap();
    assert!(streams >= 100, "{scale}");
    assert_eq!(
        scale["ok"].as_u64(),
        Some(streams),
        "every slow stream completed: {scale}"
    );
    assert_eq!(scale["peak_open"].as_u64(), Some(streams), "all open at once: {scale}");
    assert!(scale["per_stream_kib"].as_f64().is_some(), "{scale}");

    let storm = &json["storm"];
    assert!(storm["refused"].as_u64().unwrap() > 100, "{storm}");
    assert_eq!(
        storm["store_lookups"].as_f64(),
        Some(0.0),
        "made-up keys reached the store: {storm}"
    );
    assert_eq!(storm["malformed"].as_f64(), storm["refused"].as_f64(), "{storm}");

    let markdown = std::fs::read_to_string(out.path().join("compare.md")).unwrap();
    for heading in [
        "## Non-streamed chat",
        "## Streamed chat",
        "## Targets",
        "## Connection scale",
        "## Miss storm",
    ] {
        assert!(markdown.contains(heading), "{heading}:\n{markdown}");
    }
    let png = std::fs::read(out.path().join("compare.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "compare.png is a chart"
    );
}

/// The operators' soak script (`loadtest/soak.py`) for a minute: steady
/// load while its own Redis is killed and hung by turns; no request fails,
/// every hit reaches Redis, and the proxy's RSS stays within 16 MiB of
/// where it was after warm-up (2.4 MiB measured).
#[test]
fn the_soak_survives_redis_faults_for_a_minute() {
    let out = tempfile::tempdir().unwrap();
    let log = run_loadtest_script(
        "soak.py",
        &[
            "--duration",
            "60",
            "--fault-every",
            "12",
            "--fault-seconds",
            "5",
            "--concurrency",
            "4",
            "--max-rss-growth-mib",
            "16",
        ],
        out.path(),
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("soak.json")).unwrap()).unwrap();
    assert_eq!(report["requests_failed"], 0, "{log}");
    let served = report["requests_ok"].as_u64().unwrap();
    assert!(served > 500, "{served} requests in a minute");
    assert!(report["hits_stored"].as_u64().unwrap() >= served, "{log}");
    assert!(report["faults"].as_array().unwrap().len() >= 3, "{log}");
    assert!(
        report["samples"].as_array().unwrap().len() >= 55,
        "an RSS sample a second"
    );
    assert!(report["rss_growth_mib"].as_f64().unwrap() <= 16.0, "{log}");
}

/// The routing benchmark (`loadtest/routing.py --smoke`) for seconds: four
/// simulated GPUs behind the proxy, both strategies at two loads, the
/// three priorities past saturation; every figure is measured and written.
#[test]
fn the_routing_benchmark_runs_in_smoke_mode() {
    let out = tempfile::tempdir().unwrap();
    let log = run_loadtest_script("routing.py", &["--smoke"], out.path());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("routing.json")).unwrap()).unwrap();
    // Seconds are too few for a closed loop to fill cold replicas: measured, not judged.
    for strategy in ["round_robin", "load_aware+prefix"] {
        assert!(json["capacities_rps"][strategy].as_f64().is_some(), "{log}");
    }
    for load in ["0.5", "1.2"] {
        for strategy in ["round_robin", "load_aware+prefix"] {
            let row = &json["routing"][load][strategy];
            for figure in ["ttft_p50_ms", "ttft_p99_ms", "tokens_per_s"] {
                assert!(
                    row[figure].as_f64().is_some_and(|v| v > 0.0),
                    "{load} {strategy} {figure}: {json}"
                );
            }
            assert!(row["prefix_hit_rate"].as_f64().is_some(), "{load} {strategy}: {json}");
        }
    }
    for priority in ["high", "normal", "low"] {
        let row = &json["priority"]["1.5"][priority];
        let measured = row["ok"].as_u64().unwrap_or(0) + row["refused_429"].as_u64().unwrap_or(0);
        assert!(measured > 0, "{priority}: {json}");
        assert_eq!(row["timeouts"], 0, "{priority}: {json}");
    }
    let markdown = std::fs::read_to_string(out.path().join("routing.md")).unwrap();
    for heading in ["## Routing", "## Priority under saturation", "## Goals"] {
        assert!(markdown.contains(heading), "{heading}:\n{markdown}");
    }
    let png = std::fs::read(out.path().join("routing.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "routing.png is a chart");
}

/// The telemetry benchmark (`loadtest/telemetry.py --smoke`) for seconds:
/// tracing off, every request traced and one in ten, each through its own
/// gateway exporting to the script's OTLP sink.
#[test]
fn the_telemetry_benchmark_runs_in_smoke_mode() {
    let out = tempfile::tempdir().unwrap();
    run_loadtest_script("telemetry.py", &["--smoke"], out.path());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("telemetry.json")).unwrap()).unwrap();
    for variant in ["off", "traced", "tenth"] {
        for figure in ["c1_p50", "c64_rps", "c64_cpu"] {
            assert!(
                json["rows"][variant][figure].as_f64().is_some_and(|v| v > 0.0),
                "{variant} {figure}: {json}"
            );
        }
    }
    let traces = json["received"]["/v1/traces"]["exports"].as_u64().unwrap_or(0);
    assert!(traces > 0, "spans reached the sink: {json}");
    let table = std::fs::read_to_string(out.path().join("telemetry.md")).unwrap();
    assert!(table.contains("every request traced"), "{table}");
}
