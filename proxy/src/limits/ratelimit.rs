//! `x-ratelimit-*` and `Retry-After` headers in OpenAI's format, so the
//! official SDKs back off by themselves. "Requests" are the plan's `hits`
//! limits, "tokens" its token limits; with several, the tightest one shows.

use maas_store::LimitStatus;
use maas_store::model::{HITS, TOKEN_METRICS};
use time::OffsetDateTime;

/// Headers describing where an application stands, for every response.
pub fn limit_headers(statuses: &[LimitStatus], now: OffsetDateTime) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(6);
    let tightest = |filter: &dyn Fn(&str) -> bool| {
        statuses
            .iter()
            .filter(|s| filter(&s.limit.metric))
            .min_by_key(|s| (s.remaining, s.resets_at))
    };
    if let Some(status) = tightest(&|metric| metric == HITS) {
        push_status(&mut headers, REQUEST_HEADERS, status, now);
    }
    if let Some(status) = tightest(&|metric| TOKEN_METRICS.contains(&metric)) {
        push_status(&mut headers, TOKEN_HEADERS, status, now);
    }
    headers
}

const REQUEST_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const TOKEN_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// A limit's value, what is left and when it resets, under its three names.
fn push_status(
    headers: &mut Vec<(&'static str, String)>,
    [limit, remaining, reset]: [&'static str; 3],
    status: &LimitStatus,
    now: OffsetDateTime,
) {
    headers.push((limit, itoa::Buffer::new().format(status.limit.value).to_owned()));
    headers.push((remaining, itoa::Buffer::new().format(status.remaining).to_owned()));
    headers.push((reset, format_reset(status.resets_at - now)));
}

/// Whole seconds until the refusing limit resets, at least 1.
pub fn retry_after_secs(status: &LimitStatus, now: OffsetDateTime) -> u64 {
    let millis = (status.resets_at - now).whole_milliseconds().max(0) as u64;
    millis.div_ceil(1000).max(1)
}

/// A duration the way OpenAI writes it: `850ms`, `6s`, `1m30s`, `2h0m0s`, `3d4h0m0s`.
pub fn format_reset(duration: time::Duration) -> String {
    let millis = duration.whole_milliseconds().max(0) as u64;
    let mut text = String::with_capacity(16);
    let mut push = |value: u64, unit: &str| {
        text.push_str(itoa::Buffer::new().format(value));
        text.push_str(unit);
    };
    if millis < 1000 {
        push(millis, "ms");
        return text;
    }
    let secs = millis.div_ceil(1000);
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Every unit below the largest is written, zero or not.
    if days > 0 {
        push(days, "d");
    }
    if days > 0 || hours > 0 {
        push(hours, "h");
    }
    if days > 0 || hours > 0 || minutes > 0 {
        push(minutes, "m");
    }
    push(seconds, "s");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_store::model::UsageLimit;
    use maas_store::period::Period;
    use time::Duration;
    use time::macros::datetime;

    fn status(metric: &str, value: u64, used: u64, resets_in: Duration) -> LimitStatus {
        LimitStatus {
            limit: UsageLimit {
                metric: metric.into(),
                period: Period::Minute,
                value,
            },
            used,
            remaining: value.saturating_sub(used),
            resets_at: datetime!(2026-01-01 0:00 UTC) + resets_in,
        }
    }

    #[test]
    fn shows_the_tightest_limit_of_each_kind() {
        let now = datetime!(2026-01-01 0:00 UTC);
        let statuses = [
            status("hits", 10, 3, Duration::seconds(42)),
            status("hits", 1000, 999, Duration::hours(5)),
            status("total_tokens", 5000, 100, Duration::days(1)),
            status("v1-chat-completions", 1, 0, Duration::seconds(1)),
        ];
        let headers = limit_headers(&statuses, now);
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ratelimit-limit-requests"), Some("1000"));
        assert_eq!(get("x-ratelimit-remaining-requests"), Some("1"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("5h0m0s"));
        assert_eq!(get("x-ratelimit-limit-tokens"), Some("5000"));
        assert_eq!(get("x-ratelimit-remaining-tokens"), Some("4900"));
        assert_eq!(get("x-ratelimit-reset-tokens"), Some("1d0h0m0s"));
        assert!(limit_headers(&[], now).is_empty());
    }

    #[test]
    fn formats_like_openai() {
        assert_eq!(format_reset(Duration::milliseconds(850)), "850ms");
        assert_eq!(format_reset(Duration::milliseconds(5_001)), "6s");
        assert_eq!(format_reset(Duration::seconds(90)), "1m30s");
        assert_eq!(format_reset(Duration::seconds(-5)), "0ms");
        let now = datetime!(2026-01-01 0:00 UTC);
        assert_eq!(
            retry_after_secs(&status("hits", 1, 1, Duration::milliseconds(1)), now),
            1
        );
        assert_eq!(
            retry_after_secs(&status("hits", 1, 1, Duration::milliseconds(41_200)), now),
            42
        );
    }
}
