//! One JSON line per request on stdout: who, what, outcome and cost.
//! The key itself never appears, only its display prefix and last four.
//!
//! Request threads append finished lines to a shared buffer; a writer
//! thread writes it out every 20 ms, so there is no `write` and no thread
//! wake-up per request. Past 4 MiB of backlog the request thread writes the
//! buffer itself: when stdout cannot keep up, requests slow down rather
//! than lines being lost. [`flush`] writes what is left at shutdown.

use std::io::Write;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::Serialize;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const MAX_BACKLOG: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Serialize)]
pub struct AccessLogLine<'a> {
    pub ts: String,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<&'a str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// The tokens are an estimate: the upstream reported no usage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tokens_estimated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    pub request_bytes: usize,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
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
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Queues the line for stdout.
    pub fn write(&self) {
        let line = self.to_line();
        let mut backlog = BACKLOG.lock().unwrap_or_else(|e| e.into_inner());
        backlog.extend_from_slice(&line);
        if backlog.len() > MAX_BACKLOG {
            let lines = std::mem::take(&mut *backlog);
            drop(backlog);
            write_out(&lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_without_absent_fields() {
        let line = AccessLogLine {
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            key: Some("sk-maas-abcd…wxyz".into()),
            ..Default::default()
        };
        let bytes = line.to_line();
        assert_eq!(bytes.last(), Some(&b'\n'));
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["key"], "sk-maas-abcd…wxyz");
        assert!(parsed.get("product").is_none());
    }
}
