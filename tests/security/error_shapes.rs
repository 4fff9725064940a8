//! Every answer the gateway makes itself is an OpenAI error in JSON, the
//! ones Pingora makes before any of the gateway's code runs included.

use super::fixtures::gateway;
use super::raw_http::send;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_openai_errors() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("errors-app", "tinyllama", "open").await;
    let base = gw.base().to_owned();
    let many_headers: String = (0..300).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a malformed chunk",
            format!(
                "POST /tinyllama/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
                 Transfer-Encoding: chunked\r\nContent-Type: application/json\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
            )
            .into_bytes(),
            400,
        ),
        (
            "a chunk shorter than it says",
            format!(
                "POST /tinyllama/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{{}}xxxxxxxxx\r\n0\r\n\r\n"
            )
            .into_bytes(),
            400,
        ),
        (
            "300 headers",
            format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n{many_headers}Connection: close\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "conflicting Content-Length",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 5\r\n\
              Connection: close\r\n\r\n{}"
                .to_vec(),
            400,
        ),
        (
            "a Content-Length that is not a number",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2x\r\nConnection: close\r\n\r\n{}"
                .to_vec(),
            400,
        ),
        (
            "an absolute-form target for another host",
            b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a header name with a space",
            b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            "CONNECT",
            b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            "a path that is not a path",
            b"GET * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        let before = capture.count();
        let answer = send(&base, &request).await;
        assert_eq!(
            answer.status,
            status,
            "{what}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        assert!(
            answer
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: {answer:?}"
        );
        let error = answer.error();
        assert_eq!(error["type"], "invalid_request_error", "{what}: {error}");
        assert_eq!(
            answer.header("content-length").and_then(|v| v.parse::<usize>().ok()),
            Some(answer.body.len()),
            "{what}: framed"
        );
        assert_eq!(capture.count(), before, "{what}: nothing reached the model server");
    }
}
