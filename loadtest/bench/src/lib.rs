//! `maas bench`: a load client for OpenAI-compatible endpoints that sees
//! inside streams, which HTTP benchmarks (wrk, k6) cannot: time to first
//! token, the gaps between chunks, tokens per second, and, against
//! `maas sim` with `stamp_events`, what the path adds to each chunk and to
//! the time to first token, free of the simulator's timer jitter.
//!
//! Load is either a fixed concurrency (each worker sends its next request
//! when the last ends) or a fixed arrival rate (requests are scheduled at
//! `i / rate` and their latency counts from the scheduled time, so a slow
//! server cannot hide its queue: no coordinated omission). Every worker
//! keeps one HTTP/1.1 connection alive. Percentiles come from
//! HdrHistograms at 3 significant digits.
//!
//! ```sh
//! maas bench --url http://127.0.0.1:8080/v1/chat/completions --key "$KEY" \
//!     --model tinyllama-1.1b-chat --stream --concurrency 32 --duration 30
//! ```

pub mod client;
pub mod events;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::client::{Call, Connection, Outcome, Target};
pub use crate::report::{Percentiles, Report, Tally};

/// `maas bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// The endpoint, plain http, e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long)]
    pub url: String,
    /// The API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "MAAS_BENCH_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A new made-up key on every request (a miss storm; pair with --expect-status 401).
    #[arg(long, conflicts_with = "key")]
    pub random_keys: bool,
    /// The `model` of the request body.
    #[arg(long, default_value = "load-test")]
    pub model: String,
    /// The user message.
    #[arg(long, default_value = "Say hello to the gateway")]
    pub prompt: String,
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Ask for a stream (`stream: true` with `stream_options.include_usage`).
    #[arg(long)]
    pub stream: bool,
    /// Send this JSON body instead of a chat completion built from the options above.
    #[arg(long)]
    pub body: Option<String>,
    /// Send these bodies instead, one JSON object per line, in turn in the
    /// order requests start (a workload of conversations, written in order).
    #[arg(long, conflicts_with = "body")]
    pub bodies: Option<std::path::PathBuf>,
    /// Workers, each with its own connection: the requests in flight at most.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Fixed arrival rate in requests/s instead of a closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: arrivals as a Poisson process of that rate (random,
    /// exponentially distributed gaps) instead of evenly spaced.
    #[arg(long, requires = "rate")]
    pub poisson: bool,
    /// Seed of --poisson's gaps: the same seed, the same schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many measured requests instead of at the end of --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds of unrecorded load first (connections, caches, pools).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Start the workers evenly over this many seconds (closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub ramp_up: f64,
    /// The status a request must get to count as served.
    #[arg(long, default_value_t = 200)]
    pub expect_status: u16,
    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also write the report as JSON here (`-` for standard output only).
    #[arg(long)]
    pub json: Option<String>,
}

impl BenchOptions {
    /// The bodies requests take in turn: those of --bodies, else one.
    fn request_bodies(&self) -> anyhow::Result<Vec<Bytes>> {
        let Some(path) = &self.bodies else {
            return Ok(vec![self.request_body()]);
        };
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--bodies {}: {e}", path.display()))?;
        let mut bodies = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            serde_json::from_str::<serde_json::Value>(line)
                .map_err(|e| anyhow::anyhow!("--bodies {} line {}: not JSON: {e}", path.display(), number + 1))?;
            bodies.push(Bytes::from(line.to_owned()));
        }
        if bodies.is_empty() {
            anyhow::bail!("--bodies {} holds no body", path.display());
        }
        Ok(bodies)
    }

    fn request_body(&self) -> Bytes {
        if let Some(body) = &self.body {
            return Bytes::from(body.clone());
        }
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": self.prompt}],
            "max_tokens": self.max_tokens,
        });
        if self.stream {
            body["stream"] = true.into();
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        Bytes::from(body.to_string())
    }

    fn check(&self) -> anyhow::Result<()> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!("--{name} must be a number of seconds ≥ 0, not {value}"))
            }
        };
        positive("duration", self.duration)?;
        positive("warmup", self.warmup)?;
        positive("ramp-up", self.ramp_up)?;
        positive("timeout", self.timeout)?;
        if self.concurrency == 0 || self.threads == 0 {
            anyhow::bail!("--concurrency and --threads must be at least 1");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            anyhow::bail!("--rate must be a positive number of requests per second, not {rate}");
        }
        if let Some(body) = &self.body {
            serde_json::from_str::<serde_json::Value>(body).map_err(|e| anyhow::anyhow!("--body is not JSON: {e}"))?;
        }
        Ok(())
    }
}

/// When requests start and when the run ends, shared by the workers.
struct Plan {
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    /// Under a fixed arrival rate: the scheduled starts, due now or past.
    arrivals: Option<tokio::sync::Mutex<mpsc::UnboundedReceiver<Instant>>>,
    ramp_up: Duration,
    concurrency: usize,
    limit: Option<u64>,
    recorded: AtomicU64,
}

impl Plan {
    /// The next request's start, and whether it is measured; `None` ends the worker.
    async fn next_start(&self) -> Option<(Instant, bool)> {
        let at = match &self.arrivals {
            Some(arrivals) => arrivals.lock().await.recv().await?,
            None => Instant::now(),
        };
        if at >= self.deadline {
            return None;
        }
        let measured = at >= self.measure_from;
        if measured
            && let Some(limit) = self.limit
            && self.recorded.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return None;
        }
        Some((at, measured))
    }
}

/// The gaps between arrivals: even (`1 / rate`), or a Poisson process's
/// (exponential, mean `1 / rate`, from a seeded xorshift: reproducible).
struct Gaps {
    rate: f64,
    poisson: Option<u64>,
}

impl Gaps {
    /// A xorshift state from any seed: small seeds' first draws would
    /// otherwise be tiny (and their gaps huge), so the seed is mixed first
    /// (splitmix64's finalizer).
    fn state_of(seed: u64) -> u64 {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) | 1
    }

    fn next(&mut self) -> f64 {
        let Some(state) = self.poisson.as_mut() else {
            return 1.0 / self.rate;
        };
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        // Uniform in (0, 1]: never ln(0).
        let uniform = ((*state >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        -uniform.ln() / self.rate
    }
}

/// Releases request `i` at `start + i / rate` from a thread of its own:
/// tokio's timer rounds sleeps up to the next millisecond, a thread's sleep
/// is exact to tens of microseconds. A start no worker is free to take
/// waits in the channel, and its latency counts from when it was due.
fn schedule_arrivals(start: Instant, deadline: Instant, mut gaps: Gaps) -> mpsc::UnboundedReceiver<Instant> {
    let (due, arrivals) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        // The kernel may otherwise wake a sleeper up to 50 µs late, to
        // batch wake-ups; a schedule wants them on time.
        // SAFETY: PR_SET_TIMERSLACK only sets this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let mut offset = 0.0;
        loop {
            let at = start + Duration::from_secs_f64(offset);
            offset += gaps.next();
            if at >= deadline {
                break;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if due.send(at).is_err() {
                break; // every worker has stopped
            }
        }
    });
    arrivals
}

/// Runs the load in a runtime of `options.threads` threads.
pub fn run_blocking(options: &BenchOptions) -> anyhow::Result<Report> {
    options.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// Runs the load and merges what every worker saw.
pub async fn run(options: &BenchOptions) -> anyhow::Result<Report> {
    options.check()?;
    let target = Arc::new(Target::parse(&options.url)?);
    let bodies = Arc::new(options.request_bodies()?);
    let next_body = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(options.warmup);
    // With a request count the run ends when it is reached; the deadline
    // only stops a run that cannot get there.
    let deadline = match options.requests {
        Some(_) => measure_from + Duration::from_secs(24 * 3600),
        None => measure_from + Duration::from_secs_f64(options.duration),
    };
    let plan = Arc::new(Plan {
        start,
        measure_from,
        deadline,
        arrivals: options.rate.map(|rate| {
            let gaps = Gaps {
                rate,
                poisson: options.poisson.then(|| Gaps::state_of(options.seed)),
            };
            tokio::sync::Mutex::new(schedule_arrivals(start, deadline, gaps))
        }),
        ramp_up: Duration::from_secs_f64(options.ramp_up),
        concurrency: options.concurrency,
        limit: options.requests,
        recorded: AtomicU64::new(0),
    });
    let mut workers = Vec::with_capacity(options.concurrency);
    for index in 0..options.concurrency {
        let requests = Requests {
            target: target.clone(),
            bodies: bodies.clone(),
            next_body: next_body.clone(),
            key: options.key.clone(),
            made_up_keys: options.random_keys.then(|| MadeUpKeys::seeded(index as u64)),
            expect_status: options.expect_status,
            timeout: Duration::from_secs_f64(options.timeout),
        };
        workers.push(tokio::spawn(worker(plan.clone(), index, requests)));
    }
    drop(plan);
    let mut tally = Tally::default();
    let mut last_end = measure_from;
    for handle in workers {
        let (worker_tally, worker_end) = handle.await?;
        tally.merge(&worker_tally);
        last_end = last_end.max(worker_end);
    }
    let seconds = last_end.duration_since(measure_from).as_secs_f64();
    Ok(Report::new(
        options.url.clone(),
        options.stream,
        options.concurrency,
        options.rate,
        seconds,
        &tally,
    ))
}

/// What a worker sends.
struct Requests {
    target: Arc<Target>,
    bodies: Arc<Vec<Bytes>>,
    /// The next body's index, shared: bodies go out in the order requests start.
    next_body: Arc<AtomicU64>,
    key: Option<String>,
    made_up_keys: Option<MadeUpKeys>,
    expect_status: u16,
    timeout: Duration,
}

/// One worker: its connection, its requests, its tally and when its last
/// measured request ended.
async fn worker(plan: Arc<Plan>, index: usize, mut requests: Requests) -> (Tally, Instant) {
    let mut tally = Tally::default();
    let mut last_end = plan.measure_from;
    if plan.arrivals.is_none() && !plan.ramp_up.is_zero() {
        let delay = plan.ramp_up.mul_f64(index as f64 / plan.concurrency as f64);
        tokio::time::sleep_until((plan.start + delay).into()).await;
    }
    let mut connection: Option<Connection> = None;
    while let Some((started, measured)) = plan.next_start().await {
        if plan.arrivals.is_some() && measured {
            let lag = Instant::now().saturating_duration_since(started);
            let _ = tally.start_lag.record((lag.as_nanos() as u64).max(1));
        }
        let reusable = match connection.as_mut() {
            Some(open) => open.ready().await,
            None => false,
        };
        let mut open = match connection.take() {
            Some(open) if reusable => open,
            _ => match Connection::open(&requests.target).await {
                Ok(open) => open,
                Err(_) => {
                    if measured {
                        tally.error("connect");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let made_up = requests.made_up_keys.as_mut().map(MadeUpKeys::next);
        let turn = requests.next_body.fetch_add(1, Ordering::Relaxed) as usize;
        let call = Call {
            target: &requests.target,
            key: made_up.as_deref().or(requests.key.as_deref()),
            body: &requests.bodies[turn % requests.bodies.len()],
            expect_status: requests.expect_status,
            timeout: requests.timeout,
        };
        let outcome = client::send(&mut open, &call, started, measured, &mut tally).await;
        if measured {
            last_end = last_end.max(Instant::now());
        }
        if let Outcome::Reuse = outcome {
            connection = Some(open);
        }
    }
    (tally, last_end)
}

/// Keys no gateway issued, each different: `sk-maas-` and 40 characters.
struct MadeUpKeys {
    state: u64,
}

impl MadeUpKeys {
    fn seeded(seed: u64) -> MadeUpKeys {
        let nanos = client::unix_nanos();
        MadeUpKeys {
            state: (nanos ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
        }
    }

    fn next(&mut self) -> String {
        const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut key = String::with_capacity(48);
        key.push_str("sk-maas-");
        for _ in 0..40 {
            // xorshift64: fast and good enough for keys meant to be wrong.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            key.push(ALPHABET[(self.state % 62) as usize] as char);
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_average_the_rate_and_repeat_with_their_seed() {
        let gaps = |seed| {
            let mut gaps = Gaps {
                rate: 50.0,
                poisson: Some(Gaps::state_of(seed)),
            };
            (0..20_000).map(|_| gaps.next()).collect::<Vec<_>>()
        };
        let first = gaps(1);
        assert_eq!(first, gaps(1));
        assert_ne!(first, gaps(2));
        // From the first draw on: a small seed does not start with huge gaps.
        for seed in 0..20 {
            let start = &gaps(seed)[..20];
            assert!(start.iter().sum::<f64>() < 20.0 * 0.02 * 3.0, "seed {seed}: {start:?}");
        }
        let mean = first.iter().sum::<f64>() / first.len() as f64;
        assert!((mean - 0.02).abs() < 0.001, "{mean}");
        // Exponential: about 1/e of the gaps exceed the mean.
        let long = first.iter().filter(|g| **g > 0.02).count() as f64 / first.len() as f64;
        assert!((long - (-1.0f64).exp()).abs() < 0.02, "{long}");
        assert!(first.iter().all(|g| g.is_finite() && *g > 0.0));
        let mut even = Gaps {
            rate: 4.0,
            poisson: None,
        };
        assert_eq!(even.next(), 0.25);
    }

    #[test]
    fn made_up_keys_differ() {
        let mut keys = MadeUpKeys::seeded(1);
        let a = keys.next();
        let b = keys.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert!(a.starts_with("sk-maas-"));
    }
}
