//! An incremental parser of server-sent events (the WHATWG framing): fed
//! the bytes of a stream in whatever chunks they arrive, it yields each
//! complete event with its raw bytes, so a caller can pass events through
//! untouched, drop them or rewrite them. Handles `\n`, `\r\n` and `\r` line
//! ends (also split across chunks), comments, `event:` names, multi-line
//! `data:`, and garbage without panicking. Only an incomplete trailing
//! event is ever copied and held back.

use std::borrow::Cow;

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The event's bytes as received, blank-line terminator included.
    pub raw: &'a [u8],
    /// The `event:` field, if any.
    pub name: Option<&'a [u8]>,
    /// The `data:` lines joined with `\n`; `None` when the event has no data
    /// (a comment or keep-alive).
    pub data: Option<Cow<'a, [u8]>>,
}

/// The parser's state between chunks: the incomplete tail, if any.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
}

/// Where the line starting at `start` ends: `(end of content, start of next line)`,
/// or `None` when the line end is not in `bytes` yet. A `\r` at the very end
/// may be the first half of `\r\n`, so it waits for the next byte.
fn line_end(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let rest = &bytes[start..];
    let offset = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
    let end = start + offset;
    match bytes[end] {
        b'\n' => Some((end, end + 1)),
        _ if end + 1 < bytes.len() => Some((end, if bytes[end + 1] == b'\n' { end + 2 } else { end + 1 })),
        _ => None,
    }
}

/// The length of the first complete event of `bytes` (through its blank line).
fn event_len(bytes: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        let (content_end, next) = line_end(bytes, start)?;
        if content_end == start {
            return Some(next);
        }
        start = next;
    }
}

/// Parses the fields of one complete event.
fn parse_event(raw: &[u8]) -> SseEvent<'_> {
    let mut name = None;
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut start = 0;
    while let Some((end, next)) = line_end(raw, start) {
        let line = &raw[start..end];
        start = next;
        if line.is_empty() {
            break;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                data = Some(match data {
                    None => Cow::Borrowed(value),
                    Some(existing) => {
                        let mut joined = existing.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                        Cow::Owned(joined)
                    }
                })
            }
            b"event" => name = Some(value),
            _ => {}
        }
    }
    SseEvent { raw, name, data }
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds `chunk`; calls `on_event` for every event it completes, in order.
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(&SseEvent<'_>)) {
        if self.pending.is_empty() {
            let consumed = Self::drain(chunk, &mut on_event);
            self.pending.extend_from_slice(&chunk[consumed..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let consumed = Self::drain(&pending, &mut on_event);
            self.pending = pending;
            self.pending.drain(..consumed);
        }
    }

    fn drain(bytes: &[u8], on_event: &mut impl FnMut(&SseEvent<'_>)) -> usize {
        let mut consumed = 0;
        while let Some(len) = event_len(&bytes[consumed..]) {
            on_event(&parse_event(&bytes[consumed..consumed + len]));
            consumed += len;
        }
        consumed
    }

    /// Bytes of an event not completed yet.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: an unterminated last event is completed (as a
    /// browser would not, but its usage still counts) and the buffer cleared.
    pub fn finish(&mut self, mut on_event: impl FnMut(&SseEvent<'_>)) {
        if self.pending.iter().all(|b| b.is_ascii_whitespace()) {
            self.pending.clear();
            return;
        }
        let mut tail = std::mem::take(&mut self.pending);
        tail.extend_from_slice(b"\n\n");
        let consumed = Self::drain(&tail, &mut on_event);
        debug_assert!(consumed > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    struct Owned {
        raw: Vec<u8>,
        name: Option<Vec<u8>>,
        data: Option<Vec<u8>>,
    }

    fn collect(chunks: &[&[u8]]) -> (Vec<Owned>, Vec<u8>) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk, |e| {
                events.push(Owned {
                    raw: e.raw.to_vec(),
                    name: e.name.map(<[u8]>::to_vec),
                    data: e.data.as_ref().map(|d| d.to_vec()),
                })
            });
        }
        (events, parser.pending().to_vec())
    }

    #[test]
    fn parses_data_names_comments_and_done() {
        let stream =
            b": keep-alive\n\ndata: {\"a\":1}\n\nevent: response.completed\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        let (events, pending) = collect(&[stream]);
        assert!(pending.is_empty());
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].data, None);
        assert_eq!(events[1].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(events[2].name.as_deref(), Some(&b"response.completed"[..]));
        assert_eq!(events[3].data.as_deref(), Some(&b"[DONE]"[..]));
        let raw: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(raw, stream.to_vec(), "raw bytes reassemble the stream");
    }

    #[test]
    fn handles_crlf_cr_and_multiline_data() {
        let (events, _) = collect(&[b"data: a\r\ndata:b\r\n\r\ndata: c\r\rdata: d\n\n"]);
        assert_eq!(events[0].data.as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(events[1].data.as_deref(), Some(&b"c"[..]));
        assert_eq!(events[2].data.as_deref(), Some(&b"d"[..]));
    }

    #[test]
    fn waits_for_events_split_anywhere() {
        let (events, pending) = collect(&[b"data: {\"a\"", b":1}\r", b"\n\r", b"\ndata: x"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw, b"data: {\"a\":1}\r\n\r\n");
        assert_eq!(pending, b"data: x");
        let mut parser = SseParser::new();
        parser.push(b"data: tail", |_| panic!("not complete"));
        let mut finished = Vec::new();
        parser.finish(|e| finished.push(e.data.as_ref().unwrap().to_vec()));
        assert_eq!(finished, vec![b"tail".to_vec()]);
    }

    #[test]
    fn garbage_neither_panics_nor_loses_bytes() {
        let garbage: &[&[u8]] = &[b"\xff\xfe\n\n:::\r", b"\n\n\n\ndata", b"\x00:\n\n", b"event\n\n"];
        let (events, pending) = collect(garbage);
        let mut raw: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        raw.extend_from_slice(&pending);
        assert_eq!(raw, garbage.concat());
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_yields_the_same_events(
            events in proptest::collection::vec("[a-z{}:\" ]{0,20}", 0..8),
            cuts in proptest::collection::vec(0usize..400, 0..12),
            crlf in proptest::bool::ANY,
        ) {
            let newline: &str = if crlf { "\r\n" } else { "\n" };
            let stream: String = events
                .iter()
                .map(|e| format!("data: {e}{newline}{newline}"))
                .collect::<String>() + ": comment" + newline + newline;
            let bytes = stream.as_bytes();
            let whole = collect(&[bytes]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for cut in cuts {
                chunks.push(&bytes[last..cut]);
                last = cut;
            }
            chunks.push(&bytes[last..]);
            let pieces = collect(&chunks);
            proptest::prop_assert_eq!(&whole, &pieces);
            proptest::prop_assert_eq!(whole.0.len(), events.len() + 1);
        }
    }
}
