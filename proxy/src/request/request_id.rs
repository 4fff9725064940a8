//! `x-request-id`: the client's, when it is a plausible id, else one made
//! here. It goes upstream, back to the client on every answer (the
//! gateway's own included) and into the access log, so one request can be
//! followed from an SDK's exception through the gateway to the model
//! server.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest client-chosen id kept.
const MAX_LEN: usize = 128;

/// The client's id when it is 1 to 128 characters of letters, digits and
/// `-_.:/+=@` (nothing that could split a log line or a header), else a
/// new `req_` id of 24 hex digits: this process's random prefix and a
/// counter, unique without a system call per request.
pub fn accept_or_make(client: Option<&[u8]>) -> String {
    if let Some(id) = client.filter(|id| is_plausible(id)) {
        // Checked ASCII above.
        return String::from_utf8_lossy(id).into_owned();
    }
    static PREFIX: LazyLock<String> = LazyLock::new(|| maas_store::ids::hex(&maas_store::ids::random_bytes::<6>()));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
    format!("req_{}{sequence:012x}", *PREFIX)
}

fn is_plausible(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plausible_ids_and_makes_the_rest() {
        assert_eq!(accept_or_make(Some(b"trace-42:abc/def")), "trace-42:abc/def");
        for bad in [
            &b""[..],
            b"has space",
            b"new\nline",
            b"quote\"",
            "caf\u{e9}".as_bytes(),
            &[b'a'; 129],
        ] {
            let made = accept_or_make(Some(bad));
            assert!(made.starts_with("req_") && made.len() == 28, "{made}");
        }
        let (a, b) = (accept_or_make(None), accept_or_make(None));
        assert_ne!(a, b);
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
