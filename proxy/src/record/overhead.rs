//! The time the gateway spends on a request apart from waiting on the
//! model server: before the request goes upstream (reading it, the key,
//! limits, routing, the rewrite) and inside the response's filters
//! (headers, decoding, metering each chunk). Reported as
//! `maas_gateway_overhead_seconds` and, with `proxy.overhead_header`, as
//! `x-maas-overhead-us` on proxied responses, so operators can show the
//! gateway is not their bottleneck.

use std::time::{Duration, Instant};

/// The response filters' share, summed as they run.
#[derive(Debug, Default)]
pub struct GatewayTime {
    filters: Duration,
    entered: Option<Instant>,
}

impl GatewayTime {
    /// Counts from `at` until [`stop`](Self::stop) (the response's headers
    /// arrived; the filters that shape them run next).
    pub fn start_at(&mut self, at: Instant) {
        self.entered = Some(at);
    }

    pub fn stop_at(&mut self, at: Instant) {
        if let Some(entered) = self.entered.take() {
            self.add(at.saturating_duration_since(entered));
        }
    }

    /// One filter call's own time.
    pub fn add(&mut self, spent: Duration) {
        self.filters = self.filters.saturating_add(spent);
    }

    /// The gateway's own time so far: from `started` to `sent_upstream`,
    /// plus the filters; all of it up to `now` when nothing went upstream
    /// (the gateway answered itself).
    pub fn overhead(&self, started: Instant, sent_upstream: Option<Instant>, now: Instant) -> Duration {
        match sent_upstream {
            Some(sent) => sent.saturating_duration_since(started).saturating_add(self.filters),
            None => now.saturating_duration_since(started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_on_the_model_server_is_not_overhead() {
        let started = Instant::now();
        let ms = Duration::from_millis;
        let mut time = GatewayTime::default();
        // 2 ms before going upstream, 300 ms upstream, 1 ms shaping the
        // headers, three chunks of 0.5 ms metered among 700 ms of stream.
        let sent = started + ms(2);
        time.start_at(sent + ms(300));
        time.stop_at(sent + ms(301));
        for _ in 0..3 {
            time.add(Duration::from_micros(500));
        }
        let end = started + ms(1_003);
        assert_eq!(time.overhead(started, Some(sent), end), Duration::from_micros(4_500));
        // A stop without a start adds nothing.
        time.stop_at(end);
        assert_eq!(time.overhead(started, Some(sent), end), Duration::from_micros(4_500));
        // Answered by the gateway itself (a refused key): all of it.
        assert_eq!(GatewayTime::default().overhead(started, None, end), ms(1_003));
    }
}
