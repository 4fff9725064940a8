//! Any bytes, cut anywhere: the parser never panics, never loses or
//! invents bytes, and finds the same events however the input is chunked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_protocol::sse::SseParser;

fn events(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut parser = SseParser::new();
    let mut raw = Vec::new();
    for chunk in chunks {
        parser.push(chunk, |event| raw.push(event.raw.to_vec()));
    }
    (raw, parser.pending().to_vec())
}

fuzz_target!(|input: (&[u8], u16)| {
    let (bytes, cut) = input;
    let cut = cut as usize % (bytes.len() + 1);
    let whole = events(&[bytes]);
    let split = events(&[&bytes[..cut], &bytes[cut..]]);
    assert_eq!(whole, split);
    let mut rebuilt: Vec<u8> = whole.0.concat();
    rebuilt.extend_from_slice(&whole.1);
    assert_eq!(rebuilt, bytes);
});
