//! W3C Trace Context (`traceparent`, version 00): the client's trace read,
//! continued by the gateway's own span, and passed on to the model server
//! (vLLM continues it with `--otlp-traces-endpoint`). Sampling is decided
//! once, here: a parent's decision is kept, a new trace is sampled by the
//! ratio from its own id, so every hop of one trace decides alike.

/// A span's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The gateway's span.
    pub span_id: [u8; 8],
    /// The client's span, when the client sent a `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
}

/// A `traceparent` header's trace id, parent span id and sampled flag;
/// `None` for anything that is not a valid version-00 value (W3C: such a
/// header is ignored and a new trace started).
pub fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    // 00-<32 hex>-<16 hex>-<2 hex>; later versions may append fields.
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    match hex::<1>(&value[..2])?[0] {
        0xff => return None,
        0x00 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex::<16>(&value[3..35])?;
    let parent = hex::<8>(&value[36..52])?;
    let flags = hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags & 1 == 1))
}

fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex of `bytes`, as W3C and OTLP/JSON write ids.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

/// Whether a new trace is sampled at `ratio` (0 to 1), from the low 8
/// bytes of its id, as OpenTelemetry's `TraceIdRatioBased` sampler does,
/// so every service with the same ratio decides alike.
pub fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 1;
    (low as f64) < ratio * (1u64 << 63) as f64
}

impl TraceContext {
    /// The context of the gateway's span for a request with `traceparent`
    /// (if any), ids from `random` (16 + 8 bytes, from the caller's RNG).
    pub fn start(traceparent: Option<&[u8]>, ratio: f64, random: [u8; 24]) -> TraceContext {
        let span_id = nonzero(random[16..].try_into().expect("8 bytes"));
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, sampled)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                sampled,
            },
            None => {
                let trace_id: [u8; 16] = random[..16].try_into().expect("16 bytes");
                let trace_id = if trace_id == [0; 16] { [1; 16] } else { trace_id };
                TraceContext {
                    trace_id,
                    span_id,
                    parent_span_id: None,
                    sampled: sampled_by_ratio(&trace_id, ratio),
                }
            }
        }
    }

    /// The `traceparent` to send upstream: this trace, the gateway's span
    /// as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }
}

fn nonzero(id: [u8; 8]) -> [u8; 8] {
    if id == [0; 8] { [1; 8] } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued() {
        let (trace, parent, sampled) = parse_traceparent(CLIENT.as_bytes()).unwrap();
        assert_eq!(to_hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&parent), "00f067aa0ba902b7");
        assert!(sampled);
        let context = TraceContext::start(Some(CLIENT.as_bytes()), 0.0, [7; 24]);
        assert_eq!(context.trace_id, trace);
        assert_eq!(context.parent_span_id, Some(parent));
        assert!(context.sampled, "the parent's decision is kept, whatever the ratio");
        assert_eq!(
            context.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0707070707070707-01"
        );
        let unsampled = CLIENT.replace("-01", "-00");
        assert!(!TraceContext::start(Some(unsampled.as_bytes()), 1.0, [7; 24]).sampled);
        // A later version may append fields after a dash.
        let future = format!("cc{}-extra", &CLIENT[2..]);
        assert!(parse_traceparent(future.as_bytes()).is_some());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
        let context = TraceContext::start(Some(b"garbage"), 1.0, [9; 24]);
        assert_eq!((context.trace_id, context.parent_span_id), ([9; 16], None));
        assert!(context.sampled);
    }

    #[test]
    fn ratios_sample_by_trace_id() {
        assert!(sampled_by_ratio(&[0xff; 16], 1.0));
        assert!(!sampled_by_ratio(&[0; 16], 0.0));
        let sampled = (0u16..1000)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..10].copy_from_slice(&i.wrapping_mul(65).to_be_bytes());
                sampled_by_ratio(&id, 0.25)
            })
            .count();
        assert!((200..=300).contains(&sampled), "{sampled} of 1000 at 0.25");
        assert!(!TraceContext::start(None, 0.0, [3; 24]).sampled);
    }
}
