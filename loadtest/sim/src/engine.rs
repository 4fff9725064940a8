//! A GPU server on the simulator's clock (a model's optional `server:`):
//! what a vLLM replica's cost for a request depends on, so a gateway can
//! be tested against queues, KV-cache pressure and prefix caching without
//! a GPU.
//!
//! One scheduler task per model runs engine steps, as vLLM's does: each
//! step admits waiting requests first come, first served (or, with
//! [`SchedulingPolicy::Priority`], lowest `priority` first, then first
//! come) while a running place ([`ServerModel::max_num_seqs`]) and room in
//! the KV cache are free, then computes at most
//! [`ServerModel::max_num_batched_tokens`] tokens (chunked prefill): one
//! to decode for every running sequence, then chunks of the prompts the
//! prefix cache lacks, oldest first, so a long prompt spreads over steps
//! rather than stalling every running sequence. A step lasts the prefill
//! time of its chunks plus a decode time that grows with the batch;
//! the task sleeps for it (tokio's timer, no busy CPU), so a 2-core
//! machine runs several replicas at hundreds of requests a second.
//!
//! The KV cache ([`KvCache`]) holds a request's prompt and every token it
//! may generate from admission to its end (vLLM allocates blocks as it
//! goes and preempts when out of them; reserving up front keeps the same
//! capacity without preemption). A prompt's full blocks, keyed by a hash
//! of each block and everything before it, are shared with every running
//! request whose prompt starts the same way and stay cached after it ends
//! until their room is needed: the prefix cache.
//!
//! `GET /metrics` reports it with vLLM's names ([`EngineStats::render`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::kv_cache::KvCache;

/// A model's GPU server. The defaults are Llama-3.1-8B-Instruct (BF16) on
/// one H100 80 GB; loadtest/README.md says where each number comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerModel {
    /// Sequences decoded together at most (vLLM's `max_num_seqs`).
    pub max_num_seqs: u32,
    /// Tokens the KV cache holds, shared by running sequences; what is
    /// free of it is the prefix cache.
    pub kv_cache_tokens: u64,
    /// Tokens per KV block, the unit of the prefix cache.
    pub block_size: u32,
    /// Prompt tokens prefilled per second (those not in the prefix cache).
    pub prefill_tokens_per_second: f64,
    /// Most tokens one step computes (vLLM's `max_num_batched_tokens`,
    /// chunked prefill): running sequences' decode tokens and prefill
    /// chunks first, then new requests' prefills, a long prompt's spread
    /// over several steps.
    pub max_num_batched_tokens: u32,
    /// One decode step with one sequence running.
    pub decode_step_ms: f64,
    /// What each further running sequence adds to a decode step.
    pub decode_step_ms_per_sequence: f64,
    /// The order waiting requests are admitted in (vLLM's
    /// `--scheduling-policy`).
    pub scheduling_policy: SchedulingPolicy,
}

/// vLLM's `--scheduling-policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulingPolicy {
    /// First come, first served; a request with a `priority` other than 0
    /// is refused, as vLLM refuses it.
    #[default]
    Fcfs,
    /// The request's `priority` first (lower runs sooner; 0 when absent),
    /// then first come.
    Priority,
}

impl Default for ServerModel {
    fn default() -> Self {
        ServerModel {
            max_num_seqs: 256,
            kv_cache_tokens: 450_000,
            block_size: 16,
            prefill_tokens_per_second: 40_000.0,
            max_num_batched_tokens: 8192,
            decode_step_ms: 11.0,
            decode_step_ms_per_sequence: 0.037,
            scheduling_policy: SchedulingPolicy::Fcfs,
        }
    }
}

impl ServerModel {
    /// How long one engine step takes: prefilling `prefill_tokens`, then
    /// decoding a batch of `batch` sequences.
    pub fn step(&self, prefill_tokens: u64, batch: usize) -> Duration {
        let prefill = prefill_tokens as f64 / self.prefill_tokens_per_second.max(1.0);
        let decode = if batch == 0 {
            0.0
        } else {
            (self.decode_step_ms + self.decode_step_ms_per_sequence * (batch - 1) as f64) / 1000.0
        };
        Duration::from_secs_f64((prefill + decode).max(0.0))
    }

    /// Tokens per KV block (at least 1).
    pub fn block_tokens(&self) -> u64 {
        u64::from(self.block_size.max(1))
    }

    /// Whole blocks the KV cache holds.
    pub fn kv_blocks(&self) -> u64 {
        self.kv_cache_tokens / self.block_tokens()
    }

    /// Problems with the settings, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.max_num_seqs == 0 {
            problems.push(("max_num_seqs", "must be at least 1"));
        }
        if self.block_size == 0 {
            problems.push(("block_size", "must be at least 1"));
        }
        if self.max_num_batched_tokens == 0 {
            problems.push(("max_num_batched_tokens", "must be at least 1"));
        }
        if self.kv_cache_tokens < u64::from(self.block_size) {
            problems.push(("kv_cache_tokens", "must hold at least one block"));
        }
        if !self.prefill_tokens_per_second.is_finite() || self.prefill_tokens_per_second <= 0.0 {
            problems.push(("prefill_tokens_per_second", "must be above 0"));
        }
        let step_ok = |ms: f64| ms.is_finite() && ms >= 0.0;
        if !step_ok(self.decode_step_ms) || !step_ok(self.decode_step_ms_per_sequence) {
            problems.push(("decode_step_ms", "steps take 0 ms or more"));
        }
        problems
    }
}

/// The hashes of a prompt's full blocks, each covering its block and all
/// before it (so equal hashes mean equal prefixes), as vLLM keys its
/// prefix cache. The prompt's tokens are its words here.
pub fn block_hashes<'a>(texts: impl IntoIterator<Item = &'a str>, block_size: u32) -> Vec<u64> {
    let block_size = block_size.max(1) as usize;
    let mut hashes = Vec::new();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut in_block = 0;
    for text in texts {
        // Messages are kept apart: ("a b", "c") is not ("a", "b c").
        for word in text.split_whitespace().chain(std::iter::once("\u{1f}")) {
            for byte in word.bytes().chain(std::iter::once(b' ')) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            in_block += 1;
            if in_block == block_size {
                hashes.push(hash);
                in_block = 0;
            }
        }
    }
    hashes
}

/// What the engine reports, shared with `GET /metrics`.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    pub kv_used_tokens: u64,
    pub kv_cache_tokens: u64,
    /// Prompt tokens looked up in the prefix cache, and found.
    pub prefix_queries: u64,
    pub prefix_hits: u64,
    /// Times to first token: counts per bucket of [`TTFT_BUCKETS`], then
    /// the sum and the count.
    pub ttft_buckets: Vec<u64>,
    pub ttft_sum: f64,
    pub ttft_count: u64,
    /// Requests admitted to the running batch, by their queue priority.
    pub admitted_by_priority: BTreeMap<i64, u64>,
}

/// vLLM's buckets for `vllm:time_to_first_token_seconds` (up to 80 s).
pub const TTFT_BUCKETS: [f64; 19] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];

impl EngineStats {
    fn first_token(&mut self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        if self.ttft_buckets.len() != TTFT_BUCKETS.len() {
            self.ttft_buckets = vec![0; TTFT_BUCKETS.len()];
        }
        for (bucket, bound) in self.ttft_buckets.iter_mut().zip(TTFT_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.ttft_sum += seconds;
        self.ttft_count += 1;
    }

    /// The Prometheus families vLLM exposes for this, for `model`
    /// (escaped).
    pub fn render(&self, model: &str, out: &mut String) {
        let label = format!("model_name=\"{model}\"");
        let usage = if self.kv_cache_tokens == 0 {
            0.0
        } else {
            self.kv_used_tokens as f64 / self.kv_cache_tokens as f64
        };
        let gauges = [
            (
                "vllm:num_requests_running",
                "Requests in the running batch",
                self.running as f64,
            ),
            (
                "vllm:num_requests_waiting",
                "Requests waiting to be scheduled",
                self.waiting as f64,
            ),
            ("vllm:kv_cache_usage_perc", "KV-cache usage: 1 means 100 percent", usage),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{label}}} {value}"
            );
        }
        let counters = [
            (
                "vllm:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
                self.prefix_queries,
            ),
            (
                "vllm:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
                self.prefix_hits,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{label}}} {value}"
            );
        }
        let name = "sim_requests_admitted_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests admitted to the running batch, by queue priority (the simulator's own)\n# TYPE {name} counter"
        );
        for (priority, count) in &self.admitted_by_priority {
            let _ = writeln!(out, "{name}{{{label},priority=\"{priority}\"}} {count}");
        }
        let name = "vllm:time_to_first_token_seconds";
        let _ = writeln!(out, "# HELP {name} Time to first token\n# TYPE {name} histogram");
        for (i, bound) in TTFT_BUCKETS.iter().enumerate() {
            let count = self.ttft_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {}", self.ttft_count);
        let _ = writeln!(out, "{name}_sum{{{label}}} {}", self.ttft_sum);
        let _ = writeln!(out, "{name}_count{{{label}}} {}", self.ttft_count);
    }
}

/// A request for the engine.
struct Arrival {
    /// Its place in the queue, before its arrival (0 unless the policy is
    /// `priority`).
    priority: i64,
    blocks: Vec<u64>,
    prompt_tokens: u32,
    new_tokens: u32,
    /// KV blocks of its own: its prompt past the full blocks and what it
    /// generates.
    private_blocks: u64,
    tokens: mpsc::UnboundedSender<()>,
    at: Instant,
}

/// A model's running engine.
#[derive(Clone)]
pub struct Engine {
    arrivals: mpsc::UnboundedSender<Arrival>,
    stats: Arc<Mutex<EngineStats>>,
    config: ServerModel,
}

/// One request in the engine: each token it generates arrives here.
/// Dropping it (the client left) frees its place and its KV cache.
pub struct Sequence {
    tokens: mpsc::UnboundedReceiver<()>,
}

impl Sequence {
    /// Waits for the next token; `false` once the engine is gone.
    pub async fn next_token(&mut self) -> bool {
        self.tokens.recv().await.is_some()
    }
}

impl Engine {
    /// Starts the scheduler task (needs a tokio runtime).
    pub fn start(config: ServerModel) -> Engine {
        let (arrivals, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(EngineStats {
            kv_cache_tokens: config.kv_blocks() * config.block_tokens(),
            ttft_buckets: vec![0; TTFT_BUCKETS.len()],
            ..EngineStats::default()
        }));
        tokio::spawn(schedule(config.clone(), receiver, stats.clone()));
        Engine {
            arrivals,
            stats,
            config,
        }
    }

    pub fn config(&self) -> &ServerModel {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a request whose prompt has the full `blocks` and
    /// `prompt_tokens` in all, and which generates `generated` tokens
    /// (every choice's), fits in the KV cache at all.
    pub fn fits(&self, blocks: &[u64], prompt_tokens: u32, generated: u32) -> bool {
        let block = self.config.block_tokens();
        let needed = blocks.len() as u64 + private_blocks(blocks, prompt_tokens, generated, block);
        needed <= self.config.kv_blocks()
    }

    /// Queues a request: `blocks` are its prompt's [`block_hashes`]; it
    /// takes `steps` decode steps (its longest choice) and holds its prompt
    /// and the `generated` tokens of all its choices in the KV cache. Its
    /// `priority` orders the queue under [`SchedulingPolicy::Priority`].
    pub fn submit(&self, blocks: Vec<u64>, prompt_tokens: u32, steps: u32, generated: u32, priority: i64) -> Sequence {
        let (tokens, receiver) = mpsc::unbounded_channel();
        let block = self.config.block_tokens();
        let private_blocks = private_blocks(&blocks, prompt_tokens, generated, block);
        let priority = match self.config.scheduling_policy {
            SchedulingPolicy::Fcfs => 0,
            SchedulingPolicy::Priority => priority,
        };
        let _ = self.arrivals.send(Arrival {
            priority,
            blocks,
            prompt_tokens,
            new_tokens: steps.max(1),
            private_blocks,
            tokens,
            at: Instant::now(),
        });
        Sequence { tokens: receiver }
    }
}

/// The blocks a request holds alone: its prompt past its full (shared)
/// blocks and every token it generates.
fn private_blocks(blocks: &[u64], prompt_tokens: u32, generated: u32, block: u64) -> u64 {
    let shared = blocks.len() as u64 * block;
    (u64::from(prompt_tokens) + u64::from(generated))
        .saturating_sub(shared)
        .div_ceil(block)
}

struct Running {
    arrival: Arrival,
    emitted: u32,
    /// Prompt tokens still to prefill: those the prefix cache lacked (at
    /// least the last, which vLLM always computes), less the chunks done.
    prefill_left: u64,
    /// Whether it yields a token at the end of this step: it decoded, or
    /// its prefill ended.
    emits: bool,
}

async fn schedule(config: ServerModel, mut arrivals: mpsc::UnboundedReceiver<Arrival>, stats: Arc<Mutex<EngineStats>>) {
    // In admission order: priority, then arrival.
    let mut waiting: BTreeMap<(i64, u64), Arrival> = BTreeMap::new();
    let mut arrived: u64 = 0;
    let mut enqueue = |waiting: &mut BTreeMap<(i64, u64), Arrival>, arrival: Arrival| {
        arrived += 1;
        waiting.insert((arrival.priority, arrived), arrival);
    };
    let mut running: Vec<Running> = Vec::new();
    let block = config.block_tokens();
    let mut kv = KvCache::new(config.kv_blocks());
    loop {
        if waiting.is_empty() && running.is_empty() {
            match arrivals.recv().await {
                Some(arrival) => enqueue(&mut waiting, arrival),
                None => return,
            }
        }
        while let Ok(arrival) = arrivals.try_recv() {
            enqueue(&mut waiting, arrival);
        }
        // The step's tokens, at most `max_num_batched_tokens`: running
        // sequences first, in admission order (a chunk of what is left of
        // a prefill, or one token to decode), then waiting requests in
        // order while a place, room and tokens are free.
        let mut budget = u64::from(config.max_num_batched_tokens.max(1));
        let mut prefill: u64 = 0;
        for sequence in &mut running {
            sequence.emits = false;
            if budget == 0 {
                continue;
            }
            let chunk = if sequence.prefill_left > 0 {
                sequence.prefill_left.min(budget)
            } else {
                1
            };
            budget -= chunk;
            if sequence.prefill_left > 0 {
                sequence.prefill_left -= chunk;
                prefill += chunk;
            }
            sequence.emits = sequence.prefill_left == 0;
        }
        let (mut queries, mut hits) = (0u64, 0u64);
        let mut admitted: BTreeMap<i64, u64> = BTreeMap::new();
        while let Some(entry) = waiting.first_entry() {
            let next = entry.get();
            if next.tokens.is_closed() {
                entry.remove();
                continue;
            }
            if budget == 0 || running.len() >= config.max_num_seqs as usize {
                break;
            }
            let Some(found) = kv.admit(&next.blocks, next.private_blocks) else {
                break;
            };
            let arrival = entry.remove();
            *admitted.entry(arrival.priority).or_insert(0) += 1;
            let prompt = u64::from(arrival.prompt_tokens);
            let cached = (found as u64 * block).min(prompt);
            queries += prompt;
            hits += cached;
            let uncached = (prompt - cached).max(1);
            let chunk = uncached.min(budget);
            budget -= chunk;
            prefill += chunk;
            running.push(Running {
                arrival,
                emitted: 0,
                prefill_left: uncached - chunk,
                emits: chunk == uncached,
            });
        }
        {
            let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.running = running.len();
            stats.waiting = waiting.len();
            stats.kv_used_tokens = kv.used_blocks() * block;
            stats.prefix_queries += queries;
            stats.prefix_hits += hits;
            for (priority, count) in admitted {
                *stats.admitted_by_priority.entry(priority).or_insert(0) += count;
            }
        }
        let emitting = running.iter().filter(|sequence| sequence.emits).count();
        tokio::time::sleep(config.step(prefill, emitting)).await;
        // A token for every sequence that decoded or finished its prefill.
        let now = Instant::now();
        let mut firsts = Vec::new();
        running.retain_mut(|sequence| {
            if !sequence.emits {
                return true;
            }
            let delivered = sequence.arrival.tokens.send(()).is_ok();
            if delivered && sequence.emitted == 0 {
                firsts.push(now.duration_since(sequence.arrival.at));
            }
            sequence.emitted += 1;
            let done = !delivered || sequence.emitted >= sequence.arrival.new_tokens;
            if done {
                kv.release(&sequence.arrival.blocks, sequence.arrival.private_blocks);
            }
            !done
        });
        let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
        for waited in firsts {
            stats.first_token(waited);
        }
        stats.running = running.len();
        stats.kv_used_tokens = kv.used_blocks() * block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prefixes_hash_alike_and_messages_stay_apart() {
        let a = block_hashes(["one two three four", "five six"], 2);
        let b = block_hashes(["one two three four", "five seven"], 2);
        assert_eq!(a.len(), 4, "six words and two message ends: four full blocks of two");
        assert_eq!(a[..3], b[..3]);
        assert_ne!(a[3], b[3]);
        assert_ne!(block_hashes(["a b", "c"], 1), block_hashes(["a", "b c"], 1));
    }

    #[test]
    fn decode_steps_grow_with_the_batch_and_prefill_with_its_tokens() {
        let server = ServerModel::default();
        let lone = server.step(0, 1).as_secs_f64();
        let full = server.step(0, 256).as_secs_f64();
        assert!((1.0 / lone - 91.0).abs() < 1.0, "a lone sequence decodes ~91 tokens/s");
        let aggregate = 256.0 / full;
        assert!((12_000.0..13_000.0).contains(&aggregate), "{aggregate} tokens/s at 256");
        assert_eq!(server.step(40_000, 0), Duration::from_secs(1));
    }

    #[test]
    fn impossible_servers_are_named_by_field() {
        assert!(ServerModel::default().problems().is_empty());
        let broken = ServerModel {
            max_num_seqs: 0,
            block_size: 0,
            max_num_batched_tokens: 0,
            prefill_tokens_per_second: f64::NAN,
            decode_step_ms: -1.0,
            ..ServerModel::default()
        };
        let fields: Vec<&str> = broken.problems().iter().map(|(field, _)| *field).collect();
        assert_eq!(
            fields,
            [
                "max_num_seqs",
                "block_size",
                "max_num_batched_tokens",
                "prefill_tokens_per_second",
                "decode_step_ms"
            ]
        );
        let tiny = ServerModel {
            kv_cache_tokens: 8,
            ..ServerModel::default()
        };
        assert_eq!(tiny.problems()[0].0, "kv_cache_tokens");
    }
}
