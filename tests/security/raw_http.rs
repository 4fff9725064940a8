//! Requests written byte by byte: HTTP clients normalise what attacks rely
//! on (dot segments, `\`, `%2e`), reject malformed framing and never send
//! 300 headers, so these go over a plain TCP connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The OpenAI error object of a JSON error answer.
    pub fn error(&self) -> serde_json::Value {
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "an error in JSON, got {} `{content_type}`: {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)));
        assert!(
            json["error"]["message"].is_string() && json["error"]["type"].is_string(),
            "{json}"
        );
        json["error"].clone()
    }
}

/// Sends `request` as is to `base` (`http://host:port`) and reads the
/// answer until the server closes the connection (send `Connection: close`).
pub async fn send(base: &str, request: &[u8]) -> RawResponse {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    match read {
        Ok(Ok(_)) => {}
        // A reset after the answer was written still leaves the answer.
        Ok(Err(_)) if !answer.is_empty() => {}
        other => panic!("no answer to {:?}: {other:?}", String::from_utf8_lossy(request)),
    }
    parse(&answer).unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&answer)))
}

fn parse(answer: &[u8]) -> Option<RawResponse> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &answer[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Some(RawResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    body
}

/// [`post`] with a `Content-Type` of `content_type`, or none.
pub fn post_typed(target: &str, key: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let header = content_type.map(|c| format!("Content-Type: {c}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    post(target, key, &headers, body)
}

/// A POST of `body` to `target` with a Bearer `key` and `headers` (each a
/// whole `Name: value` line), closing the connection after the answer.
pub fn post(target: &str, key: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
