//! What metering costs per request beyond the proxy's I/O: reading a
//! body's facts with its prompt's bound (every request pays it), counting
//! the prompt with a tokenizer (paid only when the bound does not fit a
//! budget), for 1 KiB, 16 KiB and 256 KiB chat prompts; and scanning a
//! large JSON answer for its usage, against parsing it whole.
//!
//! `cargo bench -p maas-proxy --bench prompt`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use maas_proxy::request::body::inspect_json;
use maas_proxy::request::prompt::prompt_tally;
use maas_proxy::request::tokenizer::ModelTokenizer;
use maas_proxy::response::metering::{UsageScanner, usage_of_json};

const CORPUS: &str = "The gateway checks the key, enforces the plan's request and token limits, \
    meters every token streamed or not, and shows usage to developers and operators. ";

/// A chat request whose one user message is about `bytes` long.
fn chat_body(bytes: usize) -> Vec<u8> {
    let text: String = CORPUS.repeat(bytes / CORPUS.len() + 1)[..bytes].to_owned();
    serde_json::to_vec(&serde_json::json!({
        "model": "granite", "max_tokens": 200, "stream": true,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    }))
    .unwrap()
}

fn prompts(c: &mut Criterion) {
    let corpus: Vec<&str> = CORPUS.split_inclusive(". ").collect();
    let json = maas_sim::tokens::train_tokenizer(&corpus.repeat(50), 1000).unwrap();
    let tokenizer = ModelTokenizer(json.parse().unwrap());
    let mut group = c.benchmark_group("prompt");
    for kib in [1, 16, 256] {
        let body = chat_body(kib * 1024);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("facts_and_bound", format!("{kib}KiB")),
            &body,
            |b, body| b.iter(|| inspect_json(std::hint::black_box(body)).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("tokenizer_count", format!("{kib}KiB")),
            &body,
            |b, body| b.iter(|| prompt_tally(std::hint::black_box(body), &tokenizer).unwrap()),
        );
    }
    group.finish();
}

fn answers(c: &mut Criterion) {
    let vector: Vec<f32> = (0..4096).map(|i| (i as f32).sin()).collect();
    let data: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({"object": "embedding", "index": i, "embedding": vector}))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "object": "list", "data": data, "model": "embed",
        "usage": {"prompt_tokens": 640, "total_tokens": 640},
    }))
    .unwrap();
    let mut group = c.benchmark_group("answer_usage");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.sample_size(20);
    group.bench_function(format!("scan_{}MiB_in_64KiB_chunks", body.len() >> 20), |b| {
        b.iter(|| {
            let mut scanner = UsageScanner::default();
            for chunk in body.chunks(64 * 1024) {
                scanner.push(chunk);
            }
            scanner.usage().unwrap()
        })
    });
    group.bench_function(format!("parse_whole_{}MiB", body.len() >> 20), |b| {
        b.iter(|| usage_of_json(std::hint::black_box(&body)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, prompts, answers);
criterion_main!(benches);
