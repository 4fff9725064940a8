//! Figures of one run: HdrHistogram percentiles in microseconds, counts and
//! rates, as JSON (for `loadtest/compare.py`) and as text.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Nanosecond histograms: 1 ns to 1 hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds")
}

/// What one worker saw; workers' tallies are merged at the end.
pub struct Tally {
    pub ok: u64,
    /// Answers with another status than expected, and failed connections
    /// (`connect`, `io`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    pub completion_tokens: u64,
    /// Request start (scheduled, under a fixed arrival rate) to the end of
    /// the answer.
    pub latency: Histogram<u64>,
    /// Request start to the first generated token.
    pub ttft: Histogram<u64>,
    /// Between consecutive token events of one stream.
    pub inter_chunk: Histogram<u64>,
    /// Simulator stamp to the client reading the event (stamped streams).
    pub chunk_delay: Histogram<u64>,
    /// Time to first token minus the simulator's own wait for it (stamped
    /// streams): what the path between client and model adds to TTFT.
    pub ttft_path: Histogram<u64>,
    /// How late a request started after its scheduled time (fixed rate).
    pub start_lag: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ok: 0,
            errors: BTreeMap::new(),
            completion_tokens: 0,
            latency: histogram(),
            ttft: histogram(),
            inter_chunk: histogram(),
            chunk_delay: histogram(),
            ttft_path: histogram(),
            start_lag: histogram(),
        }
    }
}

impl Tally {
    pub fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        for (what, count) in &other.errors {
            *self.errors.entry(what.clone()).or_default() += count;
        }
        self.completion_tokens += other.completion_tokens;
        for (into, from) in [
            (&mut self.latency, &other.latency),
            (&mut self.ttft, &other.ttft),
            (&mut self.inter_chunk, &other.inter_chunk),
            (&mut self.chunk_delay, &other.chunk_delay),
            (&mut self.ttft_path, &other.ttft_path),
            (&mut self.start_lag, &other.start_lag),
        ] {
            into.add(from).expect("same bounds");
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Percentiles {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
        })
    }
}

/// The figures of a run, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub stream: bool,
    pub concurrency: usize,
    /// The fixed arrival rate asked for, if any.
    pub rate: Option<f64>,
    /// Measured seconds (after the warm-up).
    pub seconds: f64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub requests_per_second: f64,
    pub completion_tokens: u64,
    pub tokens_per_second: f64,
    pub latency_us: Option<Percentiles>,
    pub ttft_us: Option<Percentiles>,
    pub inter_chunk_us: Option<Percentiles>,
    pub chunk_delay_us: Option<Percentiles>,
    pub ttft_path_us: Option<Percentiles>,
    pub start_lag_us: Option<Percentiles>,
}

impl Report {
    pub fn new(
        url: String,
        stream: bool,
        concurrency: usize,
        rate: Option<f64>,
        seconds: f64,
        tally: &Tally,
    ) -> Report {
        let per_second = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        Report {
            url,
            stream,
            concurrency,
            rate,
            seconds,
            ok: tally.ok,
            errors: tally.errors.clone(),
            requests_per_second: per_second(tally.ok),
            completion_tokens: tally.completion_tokens,
            tokens_per_second: per_second(tally.completion_tokens),
            latency_us: Percentiles::of(&tally.latency),
            ttft_us: Percentiles::of(&tally.ttft),
            inter_chunk_us: Percentiles::of(&tally.inter_chunk),
            chunk_delay_us: Percentiles::of(&tally.chunk_delay),
            ttft_path_us: Percentiles::of(&tally.ttft_path),
            start_lag_us: Percentiles::of(&tally.start_lag),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = match self.rate {
            Some(rate) => format!("{rate} req/s arriving, up to {} in flight", self.concurrency),
            None => format!("concurrency {}", self.concurrency),
        };
        let kind = if self.stream { "streamed" } else { "non-streamed" };
        writeln!(f, "{} ({kind}, {load}, {:.1} s)", self.url, self.seconds)?;
        writeln!(
            f,
            "  {} ok, {:.1} req/s, {} completion tokens, {:.1} tokens/s",
            self.ok, self.requests_per_second, self.completion_tokens, self.tokens_per_second
        )?;
        if !self.errors.is_empty() {
            let errors: Vec<String> = self.errors.iter().map(|(what, n)| format!("{what}: {n}")).collect();
            writeln!(f, "  errors: {}", errors.join(", "))?;
        }
        writeln!(
            f,
            "  {:<26} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "µs", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for (name, figures) in [
            ("latency", &self.latency_us),
            ("time to first token", &self.ttft_us),
            ("between chunks", &self.inter_chunk_us),
            ("chunk delay (stamped)", &self.chunk_delay_us),
            ("TTFT less model (stamped)", &self.ttft_path_us),
            ("start lag (fixed rate)", &self.start_lag_us),
        ] {
            if let Some(p) = figures {
                writeln!(
                    f,
                    "  {name:<26} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                    p.p50, p.p90, p.p99, p.p999, p.max
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_report_in_microseconds() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for ns in [1_000, 2_000, 3_000] {
            a.latency.record(ns).unwrap();
        }
        b.latency.record(100_000).unwrap();
        a.ok = 3;
        b.ok = 1;
        b.error("429");
        b.error("429");
        a.merge(&b);
        let report = Report::new("http://x/v1".into(), false, 4, None, 2.0, &a);
        assert_eq!(report.ok, 4);
        assert_eq!(report.requests_per_second, 2.0);
        assert_eq!(report.errors["429"], 2);
        let latency = report.latency_us.as_ref().unwrap();
        assert_eq!(latency.count, 4);
        assert!((latency.p50 - 2.0).abs() < 0.01, "{latency:?}");
        assert!((latency.max - 100.0).abs() < 0.1, "{latency:?}");
        assert!(report.ttft_us.is_none());
        let text = report.to_string();
        assert!(text.contains("errors: 429: 2"), "{text}");
        assert!(!text.contains("first token"), "{text}");
    }
}
