//! Upstream failures: dead replicas are skipped, unreachable backends get
//! 503, slow ones 504, all in OpenAI's error shape.

use super::harness::{CATALOG, Gateway, error_of, free_port, metric_value};

fn catalog() -> String {
    // A port nothing listens on: connections are refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    format!(
        r#"
backends:
  - system_name: mixed
    urls: ["{dead}", "{{SIM}}"]
  - system_name: dead
    urls: ["{dead}"]
  - system_name: slow
    urls: ["{{SIM}}"]
    timeouts: {{read_ms: 300}}
products:
  - {{system_name: mixed, models: [chat-a], backend: mixed}}
  - {{system_name: dead, models: [chat-b], backend: dead}}
  - {{system_name: slow, models: [slow-a], backend: slow}}
plans:
  - {{product: mixed, system_name: open}}
  - {{product: dead, system_name: open}}
  - {{product: slow, system_name: open}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replicas_are_skipped_and_failures_are_openai_shaped() {
    let gw = Gateway::start(&catalog(), 1, "strict").await;
    let (_, mixed) = gw.app_key("mixed-app", "mixed", "open").await;
    for i in 0..20 {
        let response = gw.chat(gw.base(), &mixed, "chat-a").await;
        assert_eq!(response.status(), 200, "request {i}: the live replica answers");
    }
    let metrics = gw.metrics(0).await;
    let connect_errors = metric_value(&metrics, "maas_upstream_errors_total", "kind", "connect").expect(&metrics);
    assert!(metrics.contains("backend=\"mixed\",kind=\"connect\""), "{metrics}");
    assert!(
        (1..=4).contains(&connect_errors),
        "the dead replica is ejected after its first refusal, not tried on every request: {connect_errors}"
    );

    let (_, dead) = gw.app_key("dead-app", "dead", "open").await;
    let (status, error) = error_of(gw.chat(gw.base(), &dead, "chat-b").await).await;
    assert_eq!((status, error["type"].as_str()), (503, Some("server_error")), "{error}");

    let (_, slow) = gw.app_key("slow-app", "slow", "open").await;
    let started = std::time::Instant::now();
    let (status, error) = error_of(gw.chat(gw.base(), &slow, "slow-a").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (504, Some("gateway_timeout")),
        "{error}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A model server that answers one request per connection and then
/// closes it without saying so (no `Connection: close`), as a server does
/// when its idle timeout strikes just as a pooled connection is reused.
fn start_closing_server() -> u16 {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if crate::support::read_request(&mut reader).is_none() {
                    return;
                }
                let reply = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                // Close a moment later, after the proxy has pooled the
                // connection and may already have sent the next request on it.
                std::thread::sleep(std::time::Duration::from_millis(5));
                drop(stream);
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_backend_never_reach_the_client() {
    let port = start_closing_server();
    let catalog = format!(
        r#"
backends:
  - system_name: closing
    urls: ["http://127.0.0.1:{port}"]
    timeouts: {{pool_idle_ms: 60000}}
products:
  - {{system_name: closing, models: [chat-c], backend: closing}}
plans:
  - {{product: closing, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "strict").await;
    let (_, key) = gw.app_key("closing-app", "closing", "open").await;
    for i in 0..30 {
        let response = gw.chat(gw.base(), &key, "chat-c").await;
        assert_eq!(response.status(), 200, "request {i}");
        let reply: serde_json::Value = response.json().await.unwrap();
        assert_eq!(reply["usage"]["total_tokens"], 7);
        if i % 3 == 0 {
            // Sometimes let the close arrive before the next request.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A model server that compresses with gzip whatever the request asks,
/// and reports the `Accept-Encoding` it was sent.
fn start_gzipping_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Some((head, body)) = crate::support::read_request(&mut reader) else {
                continue;
            };
            let accept = head
                .lines()
                .find_map(|line| line.strip_prefix("accept-encoding:"))
                .map_or("(none)".to_owned(), |value| value.trim().to_owned());
            recorded.lock().unwrap().push(accept);
            let gzip = |data: &[u8]| {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            };
            if String::from_utf8_lossy(&body).contains("\"stream\":true") {
                let events = concat!(
                    "data: {\"id\":\"z\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" hi\"}}],",
                    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
                    "data: {\"id\":\"z\",\"choices\":[],",
                    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
                    "data: [DONE]\n\n",
                );
                let compressed = gzip(events.as_bytes());
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n\
                     Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                );
                // In three pieces, so decoding must carry state across them.
                for piece in compressed.chunks(compressed.len() / 3 + 1) {
                    let _ = write!(stream, "{:x}\r\n", piece.len());
                    let _ = stream.write_all(piece);
                    let _ = stream.write_all(b"\r\n");
                    let _ = stream.flush();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            } else {
                let reply =
                    gzip(br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.len()
                );
                let _ = stream.write_all(&reply);
            }
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressing_upstream_is_decoded_metered_and_filtered() {
    let (port, seen) = start_gzipping_server();
    let catalog = format!(
        r#"
backends:
  - system_name: gzipping
    urls: ["http://127.0.0.1:{port}"]
products:
  - {{system_name: gzipping, models: [chat-g], backend: gzipping}}
plans:
  - {{product: gzipping, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "strict").await;
    let (app_id, key) = gw.app_key("gzip-app", "gzipping", "open").await;
    let response = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base()))
        .bearer_auth(&key)
        .header("accept-encoding", "gzip")
        .json(&serde_json::json!({"model": "chat-g", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let reply: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(reply["usage"]["total_tokens"], 7);

    let response = gw.stream_chat(gw.base(), &key, "chat-g").await;
    let text = response.text().await.unwrap();
    assert_eq!(
        text, "data: {\"id\":\"z\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" hi\"}}]}\n\ndata: [DONE]\n\n",
        "decoded, and the usage the client did not ask for taken out"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["identity", "identity"],
        "the proxy asks for identity"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gw.stored(&app_id, "total_tokens").await, 7 + 4);
}

/// Runs `redis-cli` against the test Redis; its stdout.
fn redis_cli(args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", &super::harness::redis_url()])
        .args(args)
        .output()
        .expect("this test needs redis-cli: `apt-get install redis-server`");
    assert!(output.status.success(), "redis-cli {args:?}");
    String::from_utf8(output.stdout).unwrap().trim_end().to_owned()
}

/// A catalog the store cannot produce (a corrupt record) is not served:
/// the proxy keeps serving the one it has, reports not ready, retries every
/// second, and is ready again once the record is mended, with no new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalog_reload_keeps_serving_and_turns_readiness_off() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, key) = gw.app_key("steady-app", "alpha", "open").await;
    let ready_url = gw.proxies[0].metrics.replace("/metrics", "/ready");
    let readiness = || async {
        let response = gw.http.get(&ready_url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let until = |wanted: u16| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = readiness().await;
            if status == wanted {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "/ready stayed {status} ({body})");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert_eq!(readiness().await, (200, "ready\n".to_owned()));

    let pointer = format!("{}:{{r}}:env:alpha:production", gw.prefix);
    let released = redis_cli(&["GET", &pointer]);
    assert!(released.contains("version"), "{pointer}: {released}");
    redis_cli(&["SET", &pointer, "{not json"]);
    let listeners = redis_cli(&["PUBLISH", &format!("{}:changes", gw.prefix), r#"{"kind":"resync"}"#]);
    assert_eq!(
        listeners, "2",
        "the proxy and the test's own store follow the change feed"
    );

    let body = until(503).await;
    assert!(body.contains("could not be loaded"), "{body}");
    let metrics = gw.metrics(0).await;
    assert!(
        metric_value(&metrics, "maas_store_errors_total", "operation", "catalog").is_some_and(|n| n >= 1),
        "{metrics}"
    );
    assert_eq!(
        gw.chat(gw.base(), &key, "chat-a").await.status(),
        200,
        "the previous catalog is still served"
    );

    redis_cli(&["SET", &pointer, &released]);
    until(200).await;
    assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200);
}
