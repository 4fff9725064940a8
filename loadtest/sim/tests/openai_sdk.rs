//! The official `openai` Python SDK against the simulator: the wire format
//! is what real clients parse (chat, streams with and without usage,
//! completions, base64 embeddings, the Responses API, errors).

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_talks_to_the_simulator() {
    let check = Command::new("python3").args(["-c", "import openai"]).output();
    match check {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "this test needs Python 3 with the `openai` package: `python3 -m pip install openai` \
             (.ci/run installs it)"
        ),
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = maas_sim::SimConfig::default();
    for model in &mut config.models {
        model.ttft_ms = 5;
        model.itl_ms = 1;
    }
    tokio::spawn(maas_sim::serve(listener, config, std::future::pending()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_sdk.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&base)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["chat"], 16);
    assert_eq!(report["stream_chunks"], 7, "role, 5 tokens, finish");
    assert_eq!(report["stream_usage"], 15);
    assert_eq!(report["completion"], 7);
    assert_eq!(report["embedding_dims"], 384);
    assert_eq!(report["response"], 15 + 6);
    assert_eq!(
        report["response_stream_events"],
        4 + 5 + 4,
        "opening, 5 deltas, closing"
    );
    assert_eq!(report["response_stream_usage"], 8 + 5);
    assert_eq!(report["not_found"], 404);
}
