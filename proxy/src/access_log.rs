//! One JSON line per request on stdout: who, what, outcome and cost.
//! The key itself never appears, only its display prefix and last four.

use std::io::Write;

use serde::Serialize;

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
    pub request_bytes: usize,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl AccessLogLine<'_> {
    /// Writes the line with one `write` call so lines never interleave.
    pub fn write(&self) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            let _ = std::io::stdout().lock().write_all(&line);
        }
    }
}
