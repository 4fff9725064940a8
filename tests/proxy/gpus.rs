//! Simulated replicas the balancing, queueing and fault tests share: extra
//! `maas sim` processes stopped with their guard, a one-place GPU server,
//! what each replica served, and another client's load sent straight to a
//! replica.

use super::harness::{Gateway, spawn_sim, spawn_sim_with};

/// A model on a one-place GPU server, 20 ms per generated token: a second
/// request waits in its queue. Answers run to `max_tokens` (up to 200).
pub const ONE_PLACE: &str = "seed: 7
models:
  - id: gpu-a
    output_tokens: {min: 200, max: 200}
    server: {max_num_seqs: 1, decode_step_ms: 20.0, decode_step_ms_per_sequence: 0.0}
";

/// A process stopped when dropped (a test that fails leaves no orphan).
pub struct Stopped(pub std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another replica of the gateway's simulator (same models).
pub fn second_replica(dir: &std::path::Path) -> (Stopped, String) {
    let (sim, base) = spawn_sim(dir);
    (Stopped(sim), base)
}

/// A replica serving [`ONE_PLACE`].
pub fn one_place_replica(dir: &std::path::Path) -> (Stopped, String) {
    let (sim, base) = spawn_sim_with(dir, ONE_PLACE);
    (Stopped(sim), base)
}

/// How many requests of `application` the simulator at `base` served.
pub async fn served(gw: &Gateway, base: &str, application: &str) -> u64 {
    gw.sim_usage_at(base, application).await["requests"]
        .as_u64()
        .unwrap_or(0)
}

/// `count` requests of `max_tokens` to the one-place model, sent straight
/// to the replica at `base` by another client; their statuses when done.
pub fn fill_directly(
    gw: &Gateway,
    base: &str,
    count: usize,
    max_tokens: u32,
) -> Vec<tokio::task::JoinHandle<Result<u16, reqwest::Error>>> {
    (0..count)
        .map(|_| {
            let (http, url) = (gw.http.clone(), format!("{base}/v1/chat/completions"));
            tokio::spawn(async move {
                let body = serde_json::json!({"model": "gpu-a", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": "fill"}]});
                http.post(url).json(&body).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect()
}
