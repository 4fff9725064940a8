//! One JSON line per request on stdout: who, what, outcome and cost.
//! The key itself never appears, only its display prefix and last four.
//!
//! Request threads append finished lines to a shared buffer; a writer
//! thread writes it out every 20 ms, so there is no `write` and no thread
//! wake-up per request. Past 4 MiB of backlog the request thread writes the
//! buffer itself: when stdout cannot keep up, requests slow down rather
//! than lines being lost. [`flush`] writes what is left at shutdown.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const MAX_BACKLOG: usize = 4 * 1024 * 1024;

/// One request's line. Written straight into the backlog by
/// [`AccessLogLine::write`], without serde or a buffer of its own: it is
/// on every request's path.
#[derive(Debug)]
pub struct AccessLogLine<'a> {
    pub ts: OffsetDateTime,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub product: Option<&'a str>,
    pub application_id: Option<&'a str>,
    pub application: Option<&'a str>,
    pub key: Option<String>,
    /// The identity provider's client of an access token, and the person
    /// it was issued to (`sub`), for callers without a key.
    pub token_client: Option<&'a str>,
    pub user: Option<&'a str>,
    pub model: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub rejected: Option<&'a str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// The tokens are an estimate: the upstream reported no usage.
    pub tokens_estimated: bool,
    pub stream: bool,
    pub request_bytes: usize,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub client: Option<SocketAddr>,
    pub request_id: Option<&'a str>,
}

#[cfg(test)]
impl Default for AccessLogLine<'_> {
    fn default() -> Self {
        AccessLogLine {
            ts: OffsetDateTime::UNIX_EPOCH,
            method: "",
            path: "",
            status: 0,
            product: None,
            application_id: None,
            application: None,
            key: None,
            token_client: None,
            user: None,
            model: None,
            backend: None,
            rejected: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            tokens_estimated: false,
            stream: false,
            request_bytes: 0,
            duration: Duration::ZERO,
            upstream: None,
            client: None,
            request_id: None,
        }
    }
}

static BACKLOG: LazyLock<Mutex<Vec<u8>>> = LazyLock::new(|| {
    std::thread::Builder::new()
        .name("maas-access-log".into())
        .spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            }
        })
        .expect("starting the access-log thread");
    Mutex::new(Vec::with_capacity(64 * 1024))
});

/// Writes every queued line to stdout.
pub fn flush() {
    let lines = std::mem::take(&mut *BACKLOG.lock().unwrap_or_else(|e| e.into_inner()));
    write_out(&lines);
}

fn write_out(lines: &[u8]) {
    if !lines.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines);
        let _ = out.flush();
    }
}

impl AccessLogLine<'_> {
    #[cfg(test)]
    fn to_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(512);
        self.append_to(&mut line);
        line
    }

    /// Queues the line for stdout.
    pub fn write(&self) {
        let mut backlog = BACKLOG.lock().unwrap_or_else(|e| e.into_inner());
        self.append_to(&mut backlog);
        if backlog.len() > MAX_BACKLOG {
            let lines = std::mem::take(&mut *backlog);
            drop(backlog);
            write_out(&lines);
        }
    }

    /// Appends the line as one JSON object and a newline; absent fields
    /// (and false flags) are left out.
    fn append_to(&self, out: &mut Vec<u8>) {
        let mut line = JsonLine::open(out);
        line.timestamp("ts", self.ts);
        line.string("method", self.method);
        line.string("path", self.path);
        line.number("status", u64::from(self.status));
        line.optional("product", self.product);
        line.optional("application_id", self.application_id);
        line.optional("application", self.application);
        line.optional("key", self.key.as_deref());
        line.optional("token_client", self.token_client);
        line.optional("user", self.user);
        line.optional("model", self.model);
        line.optional("backend", self.backend);
        line.optional("rejected", self.rejected);
        line.number("prompt_tokens", self.prompt_tokens);
        line.number("completion_tokens", self.completion_tokens);
        line.number("total_tokens", self.total_tokens);
        if self.tokens_estimated {
            line.raw("tokens_estimated", b"true");
        }
        if self.stream {
            line.raw("stream", b"true");
        }
        line.number("request_bytes", self.request_bytes as u64);
        line.milliseconds("duration_ms", self.duration);
        if let Some(upstream) = self.upstream {
            line.milliseconds("upstream_ms", upstream);
        }
        if let Some(client) = self.client {
            line.address("client", client);
        }
        line.optional("request_id", self.request_id);
        line.close();
    }
}

/// Writes one JSON object's members into a byte buffer.
struct JsonLine<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonLine<'a> {
    fn open(out: &'a mut Vec<u8>) -> JsonLine<'a> {
        out.push(b'{');
        JsonLine { out, first: true }
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn raw(&mut self, name: &str, value: &[u8]) {
        self.name(name);
        self.out.extend_from_slice(value);
    }

    fn number(&mut self, name: &str, value: u64) {
        self.name(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        escape_into(self.out, value);
    }

    fn optional(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.string(name, value);
        }
    }

    /// `1.2.3.4:5678`, `[::1]:5678`.
    fn address(&mut self, name: &str, address: SocketAddr) {
        self.name(name);
        self.out.push(b'"');
        match address {
            SocketAddr::V4(v4) => {
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    self.out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
                self.out.push(b':');
                self.out
                    .extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
            }
            SocketAddr::V6(v6) => {
                let _ = write!(self.out, "{v6}");
            }
        }
        self.out.push(b'"');
    }

    /// Milliseconds with microsecond precision, e.g. `12.345`.
    fn milliseconds(&mut self, name: &str, value: Duration) {
        let micros = value.as_micros() as u64;
        self.name(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
        self.out.push(b'.');
        padded(self.out, micros % 1000, 3);
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-12-07T05:33:12.123456Z`.
    fn timestamp(&mut self, name: &str, at: OffsetDateTime) {
        let at = at.to_offset(time::UtcOffset::UTC);
        self.name(name);
        self.out.push(b'"');
        // Years before 0 or after 9999 do not occur in a clock's reading.
        padded(self.out, at.year().clamp(0, 9999) as u64, 4);
        for (separator, value) in [
            (b'-', u8::from(at.month())),
            (b'-', at.day()),
            (b'T', at.hour()),
            (b':', at.minute()),
            (b':', at.second()),
        ] {
            self.out.push(separator);
            padded(self.out, u64::from(value), 2);
        }
        self.out.push(b'.');
        padded(self.out, u64::from(at.microsecond()), 6);
        self.out.extend_from_slice(b"Z\"");
    }

    fn close(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// `value` in decimal, zero-padded to `width` digits.
fn padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value).as_bytes();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits.len())));
    out.extend_from_slice(digits);
}

/// Bytes a JSON string cannot hold as they are.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// `value` as a JSON string: quotes, backslashes and control characters
/// escaped; everything else (UTF-8 included) as it is.
fn escape_into(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let mut rest = value.as_bytes();
    while let Some(at) = rest.iter().position(|b| NEEDS_ESCAPE[usize::from(*b)]) {
        out.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            control => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(control >> 4)]);
                out.push(HEX[usize::from(control & 0xf)]);
            }
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &AccessLogLine) -> serde_json::Value {
        let bytes = line.to_line();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn lines_are_json_without_absent_fields() {
        let line = AccessLogLine {
            ts: time::macros::datetime!(2026-12-07 05:33:12.123456789 UTC),
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            key: Some("sk-maas-abcd…wxyz".into()),
            duration: Duration::from_micros(12_345),
            client: Some("127.0.0.1:4242".parse().unwrap()),
            ..Default::default()
        };
        let parsed = parsed(&line);
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["key"], "sk-maas-abcd…wxyz");
        assert_eq!(parsed["ts"], "2026-12-07T05:33:12.123456Z");
        assert_eq!(parsed["duration_ms"], 12.345);
        assert_eq!(parsed["client"], "127.0.0.1:4242");
        assert!(parsed.get("product").is_none());
        assert!(parsed.get("upstream_ms").is_none());
        assert!(parsed.get("stream").is_none());
        let v6 = AccessLogLine {
            client: Some("[::1]:8080".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(super::tests::parsed(&v6)["client"], "[::1]:8080");
    }

    #[test]
    fn every_string_survives_escaping() {
        for text in [
            "plain",
            "quote \" and \\ back",
            "new\nline\r\ttab",
            "\u{0}\u{1f}\u{7f}",
            "é ✓ 𝄞",
            "",
        ] {
            let line = AccessLogLine {
                path: text,
                model: Some(text),
                upstream: Some(Duration::from_micros(7)),
                stream: true,
                ..Default::default()
            };
            let parsed = parsed(&line);
            assert_eq!(parsed["path"], text);
            assert_eq!(parsed["model"], text);
            assert_eq!(parsed["upstream_ms"], 0.007);
            assert_eq!(parsed["stream"], true);
        }
    }
}
