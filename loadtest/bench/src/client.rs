//! One kept-alive HTTP/1.1 connection per worker and one request on it,
//! timed as its bytes arrive.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::events::{EventKind, EventSplitter, completion_tokens_of};
use crate::report::Tally;

/// Where requests go: a plain-HTTP address and the request line's target.
#[derive(Clone)]
pub struct Target {
    pub authority: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("--url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            anyhow::bail!("--url {url}: only http:// (measure the listener itself, not a TLS terminator)");
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("--url {url}: no host"))?
            .to_string();
        let authority = if uri.port_u16().is_some() {
            authority
        } else {
            format!("{authority}:80")
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Target { authority, path })
    }
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(target: &Target) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// Whether the connection can take another request (the server may have
    /// closed it while idle).
    pub async fn ready(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }
}

/// One request to send: its body is shared by every request of a run.
pub struct Call<'a> {
    pub target: &'a Target,
    pub key: Option<&'a str>,
    pub body: &'a Bytes,
    pub expect_status: u16,
    pub timeout: Duration,
}

/// What to do with the connection after a request.
pub enum Outcome {
    /// Keep the connection for the next request.
    Reuse,
    /// The connection failed or the server will close it.
    Reconnect,
}

/// Sends `call` and reads the whole answer, recording into `tally` unless
/// `record` is false. `started` is when the request counts as begun.
pub async fn send(
    connection: &mut Connection,
    call: &Call<'_>,
    started: Instant,
    record: bool,
    tally: &mut Tally,
) -> Outcome {
    let mut request = hyper::Request::post(call.target.path.as_str())
        .header("host", call.target.authority.as_str())
        .header("content-type", "application/json");
    if let Some(key) = call.key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(call.body.clone()))
        .expect("the request is well-formed");
    let exchange = async {
        let response = connection.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let close = response
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut body = response.into_body();
        let mut reading = Reading::new(started);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                reading.push(&data, Instant::now(), unix_nanos());
            }
        }
        Ok::<_, hyper::Error>((status, close, reading))
    };
    match tokio::time::timeout(call.timeout, exchange).await {
        Err(_) => {
            if record {
                tally.error("timeout");
            }
            Outcome::Reconnect
        }
        Ok(Err(_)) => {
            if record {
                tally.error("io");
            }
            Outcome::Reconnect
        }
        Ok(Ok((status, close, reading))) => {
            let ended = Instant::now();
            if record {
                if status == call.expect_status {
                    tally.ok += 1;
                    reading.record(ended, tally);
                } else {
                    tally.error(status.to_string());
                }
            }
            if close { Outcome::Reconnect } else { Outcome::Reuse }
        }
    }
}

/// The timings of one answer as its bytes arrive.
struct Reading {
    started: Instant,
    splitter: EventSplitter,
    is_stream: Option<bool>,
    whole: Vec<u8>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    gaps: Vec<u64>,
    chunk_delays: Vec<u64>,
    opening_stamp: Option<u64>,
    first_token_stamp: Option<u64>,
    tokens_seen: u64,
    usage_tokens: Option<u64>,
}

impl Reading {
    fn new(started: Instant) -> Reading {
        Reading {
            started,
            splitter: EventSplitter::default(),
            is_stream: None,
            whole: Vec::new(),
            first_token: None,
            last_token: None,
            gaps: Vec::new(),
            chunk_delays: Vec::new(),
            opening_stamp: None,
            first_token_stamp: None,
            tokens_seen: 0,
            usage_tokens: None,
        }
    }

    /// One read of the body, at `at` (monotonic) and `read_ns` (Unix time,
    /// the clock of the simulator's stamps).
    fn push(&mut self, data: &[u8], at: Instant, read_ns: u64) {
        let is_stream = *self
            .is_stream
            .get_or_insert_with(|| data.starts_with(b"data:") || data.starts_with(b"event:") || data.starts_with(b":"));
        if !is_stream {
            self.whole.extend_from_slice(data);
            return;
        }
        for event in self.splitter.push(data) {
            if let Some(tokens) = event.completion_tokens {
                self.usage_tokens = Some(tokens);
            }
            if let Some(stamp) = event.emitted_ns {
                self.chunk_delays.push(read_ns.saturating_sub(stamp));
            }
            match event.kind {
                EventKind::Token => {
                    self.tokens_seen += 1;
                    if let Some(last) = self.last_token {
                        self.gaps.push(at.duration_since(last).as_nanos() as u64);
                    } else {
                        self.first_token = Some(at);
                        self.first_token_stamp = event.emitted_ns;
                    }
                    self.last_token = Some(at);
                }
                EventKind::Other if self.first_token.is_none() && self.opening_stamp.is_none() => {
                    self.opening_stamp = event.emitted_ns;
                }
                _ => {}
            }
        }
    }

    fn record(self, ended: Instant, tally: &mut Tally) {
        let ns = |d: Duration| (d.as_nanos() as u64).max(1);
        let _ = tally.latency.record(ns(ended.duration_since(self.started)));
        if self.is_stream != Some(true) {
            tally.completion_tokens += completion_tokens_of(&self.whole).unwrap_or(0);
            return;
        }
        tally.completion_tokens += self.usage_tokens.unwrap_or(self.tokens_seen);
        if let Some(first) = self.first_token {
            let ttft = ns(first.duration_since(self.started));
            let _ = tally.ttft.record(ttft);
            if let (Some(opening), Some(first_stamp)) = (self.opening_stamp, self.first_token_stamp) {
                // The simulator's own wait between opening the stream and the
                // first token is the model's time, not the path's.
                let model_wait = first_stamp.saturating_sub(opening);
                let _ = tally.ttft_path.record(ttft.saturating_sub(model_wait).max(1));
            }
        }
        for gap in self.gaps {
            let _ = tally.inter_chunk.record(gap.max(1));
        }
        for delay in self.chunk_delays {
            let _ = tally.chunk_delay.record(delay.max(1));
        }
    }
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_http_with_a_port() {
        let target = Target::parse("http://127.0.0.1:8080/bench/v1/chat/completions?x=1").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path, "/bench/v1/chat/completions?x=1");
        assert_eq!(Target::parse("http://localhost/v1").unwrap().authority, "localhost:80");
        assert!(Target::parse("https://localhost/v1").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn a_stamped_stream_yields_ttft_gaps_and_the_paths_share() {
        let start = Instant::now();
        let mut reading = Reading::new(start);
        let ms = |n: u64| start + Duration::from_millis(n);
        // The simulator stamps each event 1 ms before the client reads it.
        let stamped = |text: &str, emitted_ms: u64| text.replace("STAMP", &(emitted_ms * 1_000_000).to_string());
        let role = r#"data: {"choices":[{"delta":{"role":"assistant","content":""}}],"sim_emitted_ns":STAMP}"#;
        let token =
            |t: &str| format!(r#"data: {{"choices":[{{"delta":{{"content":"{t}"}}}}],"sim_emitted_ns":STAMP}}"#);
        for (text, read_ms) in [(role.to_owned(), 1), (token(" a"), 22), (token(" b"), 27)] {
            let event = format!("{}\n\n", stamped(&text, read_ms - 1));
            reading.push(event.as_bytes(), ms(read_ms), read_ms * 1_000_000);
        }
        let end = b"data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        reading.push(end, ms(28), 28_000_000);
        let mut tally = Tally::default();
        reading.record(ms(28), &mut tally);
        assert_eq!(tally.completion_tokens, 2);
        assert_eq!(tally.ttft.len(), 1);
        let within = |value: u64, expected_ms: u64| value.abs_diff(expected_ms * 1_000_000) < 50_000;
        assert!(within(tally.ttft.max(), 22), "{}", tally.ttft.max());
        // 22 ms to the first token, of which the model waited 21 - 0 = 21.
        assert!(within(tally.ttft_path.max(), 1), "{}", tally.ttft_path.max());
        assert_eq!(tally.inter_chunk.len(), 1);
        assert!(within(tally.inter_chunk.max(), 5));
        assert_eq!(tally.chunk_delay.len(), 3);
        assert!(within(tally.chunk_delay.max(), 1) && within(tally.chunk_delay.min(), 1));
        assert!(within(tally.latency.max(), 28));
    }

    #[test]
    fn a_json_answer_counts_its_usage() {
        let start = Instant::now();
        let mut reading = Reading::new(start);
        reading.push(br#"{"choices":[{"message":{"content":"hi"}}],"#, start, 0);
        reading.push(br#""usage":{"completion_tokens":16}}"#, start, 0);
        let mut tally = Tally::default();
        reading.record(start + Duration::from_millis(1), &mut tally);
        assert_eq!(tally.completion_tokens, 16);
        assert_eq!(tally.latency.len(), 1);
        assert!(tally.ttft.is_empty());
    }
}
