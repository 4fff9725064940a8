//! The gateway queue of a saturated backend (`saturation:`), against a
//! real simulator whose GPU runs one sequence at a time: requests leave
//! highest plan priority first and in turn across applications; one that
//! cannot wait is refused 429 with `Retry-After`, costs nothing, leaves
//! the stream in flight alone; a client that goes away leaves the queue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::gpus::one_place_replica;
use super::harness::{Gateway, error_of};

/// One backend of one replica, saturated by one request of this proxy's.
fn catalog(replica: &str, queue: &str) -> String {
    format!(
        r#"
backends:
  - system_name: gpu
    urls: ["{replica}"]
    saturation: {{in_flight: 1}}
products:
  - {{system_name: gpu, models: [gpu-a], backend: gpu, queue: {queue}}}
plans:
  - {{product: gpu, system_name: high, priority: high}}
  - {{product: gpu, system_name: normal}}
  - product: gpu
    system_name: low
    priority: low
    limits: [{{metric: total_tokens, period: day, value: 100000}}]
"#
    )
}

fn body(max_tokens: u64) -> serde_json::Value {
    serde_json::json!({"model": "gpu-a", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}]})
}

/// Requests waiting in the queue of backend `gpu`, as `/metrics` says.
async fn waiting(gw: &Gateway) -> u64 {
    gw.metrics(0)
        .await
        .lines()
        .filter(|l| l.starts_with("maas_queue_waiting{backend=\"gpu\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn until_waiting(gw: &Gateway, count: u64) {
    for _ in 0..200 {
        if waiting(gw).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{count} requests never waited: {}", waiting(gw).await);
}

async fn catalog_revision(gw: &Gateway) -> u64 {
    gw.metrics(0)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("maas_catalog_revision "))
        .and_then(|v| v.parse().ok())
        .expect("maas_catalog_revision")
}

/// A request sent in the background, its status pushed to `finished`
/// (labelled) when its answer has been read to the end.
fn send(
    gw: &Gateway,
    key: &str,
    label: &'static str,
    max_tokens: u64,
    finished: &Arc<Mutex<Vec<(&'static str, u16)>>>,
) -> tokio::task::JoinHandle<()> {
    let (http, url, key) = (
        gw.http.clone(),
        format!("{}/v1/chat/completions", gw.base()),
        key.to_owned(),
    );
    let finished = finished.clone();
    tokio::spawn(async move {
        let answer = http
            .post(url)
            .bearer_auth(key)
            .json(&body(max_tokens))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let _ = answer.bytes().await;
        finished.lock().unwrap().push((label, status));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_requests_leave_by_priority_then_in_turn_across_applications() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, replica) = one_place_replica(dir.path());
    let gw = Gateway::start(&catalog(&replica, "{max_queue_ms: 20000, max_waiting: 50}"), 1, "local").await;
    let (_, first) = gw.app_key("first", "gpu", "normal").await;
    let (_, high) = gw.app_key("high", "gpu", "high").await;
    let (_, busy) = gw.app_key("busy", "gpu", "normal").await;
    let (_, modest) = gw.app_key("modest", "gpu", "normal").await;
    let (_, low) = gw.app_key("low", "gpu", "low").await;
    let finished = Arc::new(Mutex::new(Vec::new()));
    // One request holds the only place (100 tokens, 2 s: time for all
    // seven to queue, and a catalog reload, on a busy machine)...
    let mut sent = vec![send(&gw, &first, "first", 100, &finished)];
    until_waiting(&gw, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while the others queue up in this order, the high one last.
    let arrivals: [(&str, &'static str); 7] = [
        (&low, "low-1"),
        (&low, "low-2"),
        (&busy, "busy-1"),
        (&busy, "busy-2"),
        (&busy, "busy-3"),
        (&modest, "modest-1"),
        (&high, "high-1"),
    ];
    for (count, (key, label)) in arrivals.into_iter().enumerate() {
        sent.push(send(&gw, key, label, 2, &finished));
        until_waiting(&gw, count as u64 + 1).await;
        if count == 2 {
            // The catalog changes meanwhile (a new plan): the backend's
            // queue and its count of requests in flight go on.
            let revision = catalog_revision(&gw).await;
            let mut plan = gw.store.get_plan("gpu", "normal").await.unwrap().unwrap();
            plan.system_name = "extra".into();
            gw.store.put_plan(plan).await.unwrap();
            for _ in 0..200 {
                if catalog_revision(&gw).await > revision {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(catalog_revision(&gw).await > revision, "the proxy reloaded its catalog");
        }
    }
    for request in sent {
        request.await.unwrap();
    }
    let order: Vec<_> = finished.lock().unwrap().clone();
    assert!(order.iter().all(|(_, status)| *status == 200), "{order:?}");
    let labels: Vec<_> = order.iter().map(|(label, _)| *label).collect();
    assert_eq!(
        labels,
        [
            "first", "high-1", "busy-1", "modest-1", "busy-2", "busy-3", "low-1", "low-2"
        ],
        "high first; normal in turn across applications; low last"
    );
    let metrics = gw.metrics(0).await;
    for (priority, released) in [("high", 1), ("normal", 5), ("low", 2)] {
        let series = format!(
            "maas_queue_wait_seconds_count{{outcome=\"released\",priority=\"{priority}\",product=\"gpu\"}} {released}"
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_wait_is_refused_costs_nothing_and_cuts_no_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, replica) = one_place_replica(dir.path());
    let gw = Gateway::start(&catalog(&replica, "{max_queue_ms: 800, max_waiting: 1}"), 1, "strict").await;
    let (streamer, streaming_key) = gw.app_key("streamer", "gpu", "low").await;
    let (waiter, waiting_key) = gw.app_key("waiter", "gpu", "low").await;
    let (_, third_key) = gw.app_key("third", "gpu", "normal").await;

    // A stream holds the only place for about 3 s (150 tokens).
    let mut stream_body = body(150);
    stream_body["stream"] = true.into();
    stream_body["stream_options"] = serde_json::json!({"include_usage": true});
    let stream = gw.chat_body(gw.base(), &streaming_key, stream_body).await;
    assert_eq!(stream.status(), 200);
    let mut chunks = stream.bytes_stream();
    let mut streamed = String::from_utf8(chunks.next().await.unwrap().unwrap().to_vec()).unwrap();

    // Waits its product's 800 ms, then is refused, with when to come back.
    let started = Instant::now();
    let refused = gw.chat_body(gw.base(), &waiting_key, body(2)).await;
    let waited = started.elapsed();
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (429, Some("model_overloaded")),
        "{error}"
    );
    assert_eq!(error["type"], "rate_limit_error");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );

    // One waits (the product's whole queue): the next of the same
    // application and priority is refused at once.
    let gw = Arc::new(gw);
    let refused_in_queue = {
        let (gw, key) = (gw.clone(), waiting_key.clone());
        tokio::spawn(async move { error_of(gw.chat_body(gw.base(), &key, body(2)).await).await })
    };
    until_waiting(&gw, 1).await;
    let metrics = gw.metrics(0).await;
    let saturated = format!(
        "maas_upstream_replica_saturated{{backend=\"gpu\",replica=\"{}\"}} 1",
        &replica[7..]
    );
    assert!(metrics.contains(&saturated), "{saturated}\n{metrics}");
    assert!(
        metrics.contains("maas_queue_waiting{backend=\"gpu\",product=\"gpu\",priority=\"low\"} 1"),
        "{metrics}"
    );
    let started = Instant::now();
    let (status, error) = error_of(gw.chat_body(gw.base(), &waiting_key, body(2)).await).await;
    assert_eq!(status, 429, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("waiting already"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // A request of a higher priority takes the waiting one's place: that
    // one is refused at once. Its own client then gives up: it leaves the
    // queue at once too (not at its deadline, 800 ms on).
    let started = Instant::now();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let displacing = send(&gw, &third_key, "normal", 2, &finished);
    let (status, error) = refused_in_queue.await.unwrap();
    assert_eq!(status, 429, "{error}");
    assert!(error["message"].as_str().unwrap().contains("gave its place"), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    until_waiting(&gw, 1).await;
    let started = Instant::now();
    displacing.abort();
    until_waiting(&gw, 0).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // The stream in flight all along ran to its end.
    while let Some(chunk) = chunks.next().await {
        streamed.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");

    // Billed: the stream, exactly; the refused requests, nothing, and no
    // hold of theirs is left on the plan's token budget.
    let served = gw.sim_usage_at(&replica, &streamer).await;
    for metric in ["prompt_tokens", "completion_tokens"] {
        let expected = served[metric].as_u64().unwrap();
        // Usage is written in batches: give the next one time to land.
        let mut stored = 0;
        for _ in 0..100 {
            stored = gw.stored(&streamer, metric).await;
            if stored == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(stored, expected, "{metric}: {served}");
    }
    assert_eq!(served["completion_tokens"], 150, "{served}");
    let served = gw.sim_usage_at(&replica, &waiter).await;
    assert_eq!(served["requests"].as_u64().unwrap_or(0), 0, "{served}");
    assert_eq!(gw.stored(&waiter, "total_tokens").await, 0);
    let plan_limits = [maas_store::model::UsageLimit {
        metric: "total_tokens".into(),
        period: maas_store::period::Period::Day,
        value: 100_000,
    }];
    let status = gw
        .store
        .limit_status(&waiter, &plan_limits, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(status[0].remaining, 100_000, "{status:?}");

    // The place is free again: the next request goes straight through.
    let answer = gw.chat_body(gw.base(), &third_key, body(2)).await;
    assert_eq!(answer.status(), 200);
    let metrics = gw.metrics(0).await;
    for (priority, outcome, count) in [
        ("low", "timeout", 1),
        ("low", "full", 1),
        ("low", "displaced", 1),
        ("normal", "gone", 1),
    ] {
        let series = format!(
            "maas_queue_wait_seconds_count{{outcome=\"{outcome}\",priority=\"{priority}\",product=\"gpu\"}} {count}"
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
}

/// A model on a GPU server that schedules by vLLM's `priority`.
const PRIORITY_SERVER: &str = "seed: 7
models:
  - id: gpu-a
    output_tokens: {min: 3, max: 3}
    server: {max_num_seqs: 4, decode_step_ms: 1.0, scheduling_policy: priority}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_servers_queue_gets_each_plans_priority_and_never_the_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, base) = super::harness::spawn_sim_with(dir.path(), PRIORITY_SERVER);
    let _replica = super::gpus::Stopped(replica);
    // `gpu` schedules by priority; `plain` (the gateway's own simulator,
    // first come first served) refuses any priority but 0, as vLLM does.
    let catalog = format!(
        r#"
backends:
  - {{system_name: gpu, urls: ["{base}"], priority_scheduling: true}}
  - {{system_name: plain, urls: ["{{SIM}}"]}}
products:
  - {{system_name: gpu, models: [gpu-a], backend: gpu}}
  - {{system_name: plain, models: [chat-a], backend: plain}}
plans:
  - {{product: gpu, system_name: high, priority: high}}
  - {{product: gpu, system_name: normal}}
  - {{product: gpu, system_name: low, priority: low}}
  - {{product: plain, system_name: low, priority: low}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    // Each client asks to jump the queue; each plan's priority is sent.
    for (plan, client_asks) in [("high", 5), ("normal", -100), ("low", -100)] {
        let (_, key) = gw.app_key(plan, "gpu", plan).await;
        let mut ask = body(3);
        ask["priority"] = client_asks.into();
        let answer = gw.chat_body(gw.base(), &key, ask).await;
        assert_eq!(answer.status(), 200, "{plan}");
    }
    let metrics = gw.text(&format!("{base}/metrics")).await;
    let admitted = |priority: i64| {
        let series = format!("sim_requests_admitted_total{{model_name=\"gpu-a\",priority=\"{priority}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(
        (admitted(-1), admitted(0), admitted(1)),
        (Some(1), Some(1), Some(1)),
        "{metrics}"
    );
    assert_eq!((admitted(5), admitted(-100)), (None, None), "{metrics}");

    // Without priority scheduling, a client's priority becomes the default.
    let (_, key) = gw.app_key("plain", "plain", "low").await;
    let ask = serde_json::json!({"model": "chat-a", "max_tokens": 3, "priority": -7,
        "messages": [{"role": "user", "content": "hello"}]});
    let answer = gw.chat_body(gw.base(), &key, ask.clone()).await;
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    // The simulator itself refuses it, as vLLM would.
    let direct = gw.chat_body(&gw.sim_base, "-", ask).await;
    assert_eq!(direct.status(), 400);
}
