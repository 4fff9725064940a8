//! A model server's load as its Prometheus `/metrics` say (vLLM's names,
//! which the simulator also serves), and the body of the HTTP/1.1 answer
//! that carries them: what the gateway's `load_aware` balancing reads every
//! few hundred milliseconds.

/// One reading of a replica's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub waiting: u32,
    pub running: u32,
    /// 0 to 1.
    pub kv_usage: f64,
}

/// vLLM's load from a Prometheus text exposition: waiting and running
/// requests summed over its models, KV-cache use the highest of them
/// (`vllm:kv_cache_usage_perc`, or `vllm:gpu_cache_usage_perc` of older
/// vLLM). `None` when it says neither queue.
pub fn parse_metrics(text: &str) -> Option<Reading> {
    let mut reading = Reading::default();
    let mut seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let count = if value.is_finite() && value > 0.0 {
            value.min(f64::from(u32::MAX)) as u32
        } else {
            0
        };
        match name {
            "vllm:num_requests_waiting" => {
                reading.waiting = reading.waiting.saturating_add(count);
                seen = true;
            }
            "vllm:num_requests_running" => {
                reading.running = reading.running.saturating_add(count);
                seen = true;
            }
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" if value.is_finite() => {
                reading.kv_usage = reading.kv_usage.max(value);
            }
            _ => {}
        }
    }
    seen.then_some(reading)
}

/// The body of a `200` HTTP/1.1 answer, chunked or not.
pub fn http_body(answer: &[u8]) -> Option<String> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    if status.split(' ').nth(1) != Some("200") {
        return None;
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    if !chunked {
        return String::from_utf8(body.to_vec()).ok();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllms_load_and_ignores_the_rest() {
        let text = "# HELP vllm:num_requests_waiting x\n# TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{model_name=\"a\"} 3\nvllm:num_requests_waiting{model_name=\"b\"} 2.0\n\
            vllm:num_requests_running{model_name=\"a\"} 7\nvllm:kv_cache_usage_perc{model_name=\"a\"} 0.25\n\
            vllm:kv_cache_usage_perc{model_name=\"b\"} 0.5\nsim_requests_total{model=\"a\"} 99\n";
        assert_eq!(
            parse_metrics(text),
            Some(Reading {
                waiting: 5,
                running: 7,
                kv_usage: 0.5
            })
        );
        let old = "vllm:num_requests_waiting 1\nvllm:gpu_cache_usage_perc 0.9\n";
        assert_eq!(parse_metrics(old).map(|r| r.kv_usage), Some(0.9));
        assert_eq!(parse_metrics("process_cpu_seconds_total 3\n"), None, "not a vLLM");
        assert_eq!(
            parse_metrics("vllm:num_requests_waiting NaN\nvllm:num_requests_waiting -4\ngarbage\n"),
            Some(Reading::default())
        );
    }

    #[test]
    fn http_bodies_plain_and_chunked() {
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").as_deref(),
            Some("hello")
        );
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n")
                .as_deref(),
            Some("hello")
        );
        assert_eq!(http_body(b"HTTP/1.1 404 Not Found\r\n\r\nno"), None);
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
        assert_eq!(http_body(b"garbage"), None);
    }
}
