//! Identifiers and secrets from the operating system's CSPRNG.
//!
//! Ids are `<prefix>_<26 chars>`: 48 bits of milliseconds then 80 random
//! bits in Crockford base32, so they sort by creation time (lists page by
//! id) and never collide in practice across replicas.

use std::sync::Mutex;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Fills `buf` from the OS CSPRNG. Failing to read it is not recoverable:
/// handing out predictable keys would be worse than stopping.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

/// The last id value handed out by this process.
static LAST: Mutex<u128> = Mutex::new(0);

/// A new id such as `app_01jd7x…`, ordered by creation time. Within one
/// process ids strictly increase even within a millisecond (or when the
/// clock steps back), so lists keep insertion order.
pub fn new_id(prefix: &str, now_ms: u64) -> String {
    let random: [u8; 10] = random_bytes();
    let mut value: u128 = u128::from(now_ms & 0xFFFF_FFFF_FFFF) << 80;
    for (i, byte) in random.iter().enumerate() {
        value |= u128::from(*byte) << (8 * (9 - i));
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if value <= *last {
            value = *last + 1;
        }
        *last = value;
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        out.push(CROCKFORD[((value >> (5 * i)) & 31) as usize] as char);
    }
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_differ() {
        let a = new_id("app", 1_000);
        let b = new_id("app", 1_001);
        let c = new_id("app", 1_001);
        assert!(a < b && a < c, "{a} {b}");
        assert_ne!(b, c);
        let d = new_id("app", 1_000);
        assert!(d > c, "ids never go back, even when the clock does");
        assert_eq!(a.len(), 30);
        assert!(a.starts_with("app_"));
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
