//! Any upstream stream, cut anywhere, with any usage options: the meter
//! never panics, and its output and count do not depend on the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_protocol::rewrite::ClientUsage;
use maas_protocol::stream_meter::StreamMeter;

fn run(client: ClientUsage, chunks: &[&[u8]]) -> (Vec<u8>, (maas_protocol::metering::TokenUsage, bool)) {
    let mut meter = StreamMeter::new(client);
    let mut seen = Vec::new();
    for chunk in chunks {
        match meter.filter(chunk) {
            Some(out) => seen.extend(out),
            None => seen.extend_from_slice(chunk),
        }
    }
    if let Some(out) = meter.finish() {
        seen.extend(out);
    }
    (seen, meter.tokens(7))
}

fuzz_target!(|input: (&[u8], u16, bool, bool)| {
    let (bytes, cut, final_chunk, every_chunk) = input;
    let client = ClientUsage {
        final_chunk,
        every_chunk,
    };
    let cut = cut as usize % (bytes.len() + 1);
    let whole = run(client, &[bytes]);
    let split = run(client, &[&bytes[..cut], &bytes[cut..]]);
    assert_eq!(whole.1, split.1);
    if client.final_chunk && client.every_chunk {
        assert_eq!(whole.0, bytes, "nothing asked to be removed: bytes pass as they are");
    } else {
        assert_eq!(whole.0, split.0);
    }
});
