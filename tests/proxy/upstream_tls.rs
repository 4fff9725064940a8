//! `https://` backends: the proxy speaks TLS to the model server, checks its
//! certificate against the operator's CA (`proxy.upstream_ca_file`) and
//! meters what comes back; an untrusted certificate is a 503 for the client
//! and `kind="tls"` for the operator.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::harness::{Gateway, error_of, free_port, metric_value};
use crate::support::certs::make_certificates;

/// Terminates TLS on `port` with the server certificate in `dir` and
/// forwards each connection to `target` over plain TCP, as a TLS sidecar in
/// front of vLLM does; counts the completed handshakes.
async fn tls_terminator(dir: &Path, port: u16, target: String, handshakes: Arc<AtomicUsize>) {
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, target, handshakes) = (acceptor.clone(), target.clone(), handshakes.clone());
            tokio::spawn(async move {
                // A refused handshake is the proxy's to report.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                handshakes.fetch_add(1, Ordering::Relaxed);
                let Ok(mut plain) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_reached_with_the_operators_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let tls_port = free_port();
    let catalog = format!(
        r#"
backends:
  - system_name: secure
    urls: ["https://localhost:{tls_port}"]
products:
  - {{system_name: secure, models: [chat-a], backend: secure}}
plans:
  - {{product: secure, system_name: open}}
"#
    );
    let mut gw = Gateway::start(&catalog, 0, "strict").await;
    let handshakes = Arc::new(AtomicUsize::new(0));
    let sim = gw.sim_base.trim_start_matches("http://").to_owned();
    tls_terminator(certs.path(), tls_port, sim, handshakes.clone()).await;
    let ca = certs.path().join("ca.crt").display().to_string();
    gw.add_proxy_with_env("strict", &[("MAAS_UPSTREAM_CA_FILE", &ca)]);
    // Trusts only the system's roots, which do not hold the test CA.
    gw.add_proxy("strict");
    let (app_id, key) = gw.app_key("secure-app", "secure", "open").await;

    let response = gw.chat(gw.base(), &key, "chat-a").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{body}");
    let streamed = gw.stream_chat(gw.base(), &key, "chat-a").await;
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        handshakes.load(Ordering::Relaxed) >= 1,
        "the requests went through the TLS terminator"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.assert_stored_as_served(&app_id).await;

    let (status, error) = error_of(gw.chat(&gw.proxies[1].base, &key, "chat-a").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("service_unavailable")),
        "{error}"
    );
    let metrics = gw.metrics(1).await;
    assert!(
        metric_value(&metrics, "maas_upstream_errors_total", "kind", "tls").is_some_and(|n| n >= 1),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "maas_upstream_errors_total", "kind", "connect"),
        Some(0),
        "a TLS failure is not counted as a connect failure: {metrics}"
    );
}

#[test]
fn a_wrong_upstream_ca_file_stops_the_proxy_naming_the_setting() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    for (file, reason) in [
        ("server.key", "holds a private key"),
        ("missing.crt", "No such file"),
        ("server.ext", "holds no PEM certificate"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_maas"))
            .args(["proxy", "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .env("MAAS_UPSTREAM_CA_FILE", certs.path().join(file))
            .env("MAAS_DATA_DIR", certs.path())
            .env_remove("MAAS_CONFIG")
            .env_remove("MAAS_REDIS_URL")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file}: the proxy started");
        assert!(
            said.contains("proxy.upstream_ca_file") && said.contains(reason),
            "{file}: {said}"
        );
    }
}
