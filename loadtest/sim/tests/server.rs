//! A model on a GPU server (`server:`): requests past its running places
//! wait their turn, a prompt whose prefix is cached is prefilled faster,
//! a request larger than the KV cache is refused, and `/metrics` says so
//! with vLLM's names.

use std::time::Duration;

use maas_sim::TokenRange;
use maas_sim::engine::{SchedulingPolicy, ServerModel};
use serde_json::{Value, json};

mod support;

use support::{Sim, model, start};

/// A small, slow server: two running places, 10 ms decode steps (+1 ms a
/// sequence), 2,000 prompt tokens prefilled a second, blocks of 4 tokens.
fn server() -> ServerModel {
    ServerModel {
        max_num_seqs: 2,
        kv_cache_tokens: 10_000,
        block_size: 4,
        prefill_tokens_per_second: 2_000.0,
        max_num_batched_tokens: 8192,
        decode_step_ms: 10.0,
        decode_step_ms_per_sequence: 1.0,
        scheduling_policy: SchedulingPolicy::Fcfs,
    }
}

/// The value of the first metric line that starts with `series`.
async fn metric(sim: &Sim, series: &str) -> f64 {
    let text = sim.text("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no `{series}` in {text}"))
}

fn chat(prompt: &str, max_tokens: u32) -> Value {
    json!({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_running_places_wait_and_the_metrics_say_so() {
    let sim = std::sync::Arc::new(
        start(model(|m| {
            m.output_tokens = TokenRange { min: 30, max: 30 };
            m.server = Some(server());
        }))
        .await,
    );
    let running = "vllm:num_requests_running{model_name=\"m\"}";
    let waiting = "vllm:num_requests_waiting{model_name=\"m\"}";
    assert_eq!((metric(&sim, running).await, metric(&sim, waiting).await), (0.0, 0.0));
    let requests: Vec<_> = (0..4)
        .map(|i| {
            let sim = sim.clone();
            tokio::spawn(async move {
                let answer: Value = sim
                    .post("/v1/chat/completions", "app", chat(&format!("question {i}"), 30))
                    .await
                    .json()
                    .await
                    .unwrap();
                answer["usage"]["completion_tokens"].as_u64()
            })
        })
        .collect();
    // Two run (30 steps of ~11 ms each), two wait for them.
    let mut seen = (0.0, 0.0);
    for _ in 0..100 {
        seen = (metric(&sim, running).await, metric(&sim, waiting).await);
        if seen == (2.0, 2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen, (2.0, 2.0), "two running, two waiting");
    assert!(metric(&sim, "vllm:kv_cache_usage_perc{model_name=\"m\"}").await > 0.0);
    for request in requests {
        assert_eq!(request.await.unwrap(), Some(30));
    }
    assert_eq!((metric(&sim, running).await, metric(&sim, waiting).await), (0.0, 0.0));
    assert_eq!(metric(&sim, "vllm:kv_cache_usage_perc{model_name=\"m\"}").await, 0.0);
    // Every first token is counted; the two that waited took over 0.25 s.
    let ttft = "vllm:time_to_first_token_seconds";
    assert_eq!(metric(&sim, &format!("{ttft}_count{{model_name=\"m\"}}")).await, 4.0);
    assert_eq!(
        metric(&sim, &format!("{ttft}_bucket{{model_name=\"m\",le=\"0.25\"}}")).await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_prefilled_in_chunks_beside_running_streams() {
    // 100 tokens a step: a 1,000-token prompt takes ten steps of ~60 ms
    // (50 ms of prefill at 2,000 a second, and the decode), not one of 500 ms.
    let sim = std::sync::Arc::new(
        start(model(|m| {
            m.output_tokens = TokenRange { min: 100, max: 100 };
            m.server = Some(ServerModel {
                max_num_batched_tokens: 100,
                ..server()
            });
        }))
        .await,
    );
    let mut stream = sim
        .post(
            "/v1/chat/completions",
            "app",
            json!({"model": "m", "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(stream.status(), 200);
    stream.chunk().await.unwrap().expect("the first token");
    let long = {
        let sim = sim.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer = sim
                .post("/v1/chat/completions", "app", chat(&"word ".repeat(1000), 1))
                .await;
            (answer.status().as_u16(), started.elapsed())
        })
    };
    let mut last = std::time::Instant::now();
    let mut longest_gap = Duration::ZERO;
    while let Some(_chunk) = stream.chunk().await.unwrap() {
        longest_gap = longest_gap.max(last.elapsed());
        last = std::time::Instant::now();
    }
    let (status, took) = long.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        took >= Duration::from_millis(500),
        "its prefill takes 0.5 s in all: {took:?}"
    );
    assert!(
        longest_gap < Duration::from_millis(200),
        "the running stream kept going through the long prefill: a {longest_gap:?} gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_prefix_is_not_prefilled_again() {
    let sim = start(model(|m| m.server = Some(server()))).await;
    let system = "word ".repeat(400);
    let ttft_sum = "vllm:time_to_first_token_seconds_sum{model_name=\"m\"}";
    let hits = "vllm:prefix_cache_hits_total{model_name=\"m\"}";
    let body = |question: &str| {
        json!({"model": "m", "max_tokens": 2, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": question}]})
    };
    let first = sim.post("/v1/chat/completions", "app", body("first question")).await;
    assert_eq!(first.status(), 200);
    let (cold, cold_hits) = (metric(&sim, ttft_sum).await, metric(&sim, hits).await);
    assert_eq!(cold_hits, 0.0);
    assert!(cold > 0.2, "400 prompt tokens at 2,000 a second: {cold} s");
    let second = sim.post("/v1/chat/completions", "app", body("another one")).await;
    assert_eq!(second.status(), 200);
    let warm = metric(&sim, ttft_sum).await - cold;
    assert!(
        metric(&sim, hits).await >= 400.0,
        "the system prompt's blocks were cached"
    );
    assert!(warm < cold / 4.0, "cached: {warm} s, cold: {cold} s");
    assert!(metric(&sim, "vllm:prefix_cache_queries_total{model_name=\"m\"}").await > 800.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_server_runs_lower_priorities_first_and_a_fcfs_one_refuses_them() {
    let sim = std::sync::Arc::new(
        start(model(|m| {
            m.output_tokens = TokenRange { min: 20, max: 20 };
            m.server = Some(ServerModel {
                max_num_seqs: 1,
                scheduling_policy: SchedulingPolicy::Priority,
                ..server()
            });
        }))
        .await,
    );
    let ask = |prompt: &'static str, priority: i64| {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut body = chat(prompt, 20);
            body["priority"] = priority.into();
            let status = sim.post("/v1/chat/completions", "app", body).await.status();
            (status.as_u16(), std::time::Instant::now())
        })
    };
    let until = |series: &'static str, value: f64| {
        let sim = sim.clone();
        async move {
            for _ in 0..200 {
                if metric(&sim, series).await == value {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("{series} never reached {value}");
        }
    };
    let waiting = "vllm:num_requests_waiting{model_name=\"m\"}";
    let first = ask("runs first", 0);
    until("vllm:num_requests_running{model_name=\"m\"}", 1.0).await;
    let low = ask("came second", 5);
    until(waiting, 1.0).await;
    let high = ask("came last", -3);
    until(waiting, 2.0).await;
    let (first, low, high) = (first.await.unwrap(), low.await.unwrap(), high.await.unwrap());
    assert_eq!((first.0, low.0, high.0), (200, 200, 200));
    assert!(
        first.1 < high.1 && high.1 < low.1,
        "the lower priority ran before the earlier arrival"
    );
    let admitted = "sim_requests_admitted_total{model_name=\"m\",priority=";
    assert_eq!(metric(&sim, &format!("{admitted}\"-3\"}}")).await, 1.0);
    assert_eq!(metric(&sim, &format!("{admitted}\"5\"}}")).await, 1.0);

    // First come, first served (vLLM's default) refuses any other priority.
    let fcfs = start(model(|m| m.server = Some(server()))).await;
    let mut body = chat("hello", 5);
    body["priority"] = (-1).into();
    let refused = fcfs.post("/v1/chat/completions", "app", body.clone()).await;
    assert_eq!(refused.status().as_u16(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "Got priority -1 but Priority scheduling is not enabled."
    );
    assert_eq!(error["error"]["param"], "priority");
    body["priority"] = 0.into();
    assert_eq!(
        fcfs.post("/v1/chat/completions", "app", body).await.status().as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_requests_share_their_prompts_blocks() {
    // Room for one 650-token request and a bit: two with the same 600-word
    // system prompt run side by side only if they hold it once.
    let sim = std::sync::Arc::new(
        start(model(|m| {
            m.output_tokens = TokenRange { min: 30, max: 30 };
            m.server = Some(ServerModel {
                kv_cache_tokens: 1_000,
                ..server()
            });
        }))
        .await,
    );
    let system = "word ".repeat(600);
    let ask = |question: &'static str| {
        let (sim, system) = (sim.clone(), system.clone());
        tokio::spawn(async move {
            let body = json!({"model": "m", "max_tokens": 30, "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": question}]});
            sim.post("/v1/chat/completions", "app", body).await.status()
        })
    };
    let running = "vllm:num_requests_running{model_name=\"m\"}";
    let first = ask("first question");
    while metric(&sim, running).await < 1.0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second = ask("second question");
    let mut most = 0.0f64;
    let mut usage = 0.0f64;
    for _ in 0..100 {
        let now = metric(&sim, running).await;
        if now > most {
            most = now;
            usage = metric(&sim, "vllm:kv_cache_usage_perc{model_name=\"m\"}").await;
        }
        if most == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(most, 2.0, "the second request ran beside the first");
    assert!(usage < 0.8, "the system prompt is held once: {usage}");
    assert_eq!(
        (first.await.unwrap().as_u16(), second.await.unwrap().as_u16()),
        (200, 200)
    );
    let hits = metric(&sim, "vllm:prefix_cache_hits_total{model_name=\"m\"}").await;
    assert!(hits >= 600.0, "the second found the first's blocks: {hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_paced_by_the_server_and_oversized_requests_refused() {
    let small = ServerModel {
        kv_cache_tokens: 1_000,
        ..server()
    };
    let sim = start(model(|m| m.server = Some(small))).await;
    let events = sim
        .events(
            "/v1/chat/completions",
            json!({"model": "m", "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    // Prompt and output past the 1,000 tokens of KV cache (within the context).
    let huge = sim
        .post("/v1/chat/completions", "app", chat(&"word ".repeat(995), 200))
        .await;
    assert_eq!(huge.status(), 400);
    let error: Value = huge.json().await.unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("KV cache"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_choice_holds_its_tokens_in_the_kv_cache() {
    let sim = std::sync::Arc::new(
        start(model(|m| {
            m.output_tokens = TokenRange { min: 30, max: 30 };
            m.server = Some(server());
        }))
        .await,
    );
    let request = {
        let sim = sim.clone();
        tokio::spawn(async move {
            let body = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "question"}]});
            sim.post("/v1/chat/completions", "app", body).await.status()
        })
    };
    let usage = "vllm:kv_cache_usage_perc{model_name=\"m\"}";
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = metric(&sim, usage).await;
        if seen > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A prompt of 7 tokens (1 word, 3 per message, 3) and 2 × 30 generated:
    // 67 tokens, in 17 blocks of 4, of 10,000.
    assert_eq!(seen, 68.0 / 10_000.0);
    assert_eq!(request.await.unwrap(), 200);
}
