//! API key secrets: generated, hashed and displayed, never stored in clear.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::ids::{hex, random_bytes};

/// The default secret prefix, recognizable by secret scanners.
pub const DEFAULT_KEY_PREFIX: &str = "sk-maas-";
/// Characters after the prefix: 34 random base62 characters (≈ 202 bits)
/// then a 6-character checksum.
const SECRET_CHARS: usize = 40;
/// The checksum: CRC-32 of everything before it, in base62 (62⁶ > 2³²).
const CHECKSUM_CHARS: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a key secret: what the store keeps and the proxy looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(secret: &str) -> KeyHash {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for KeyHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a key hash is 64 hex digits".to_owned());
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        }
        Ok(KeyHash(out))
    }
}

impl Serialize for KeyHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A freshly generated secret, shown to its owner exactly once.
pub struct KeySecret {
    secret: String,
    prefix_len: usize,
}

impl KeySecret {
    /// A new secret: `prefix`, 34 base62 characters from the OS CSPRNG and
    /// the checksum of both (see [`has_valid_checksum`]).
    pub fn generate(prefix: &str) -> KeySecret {
        let random_end = prefix.len() + SECRET_CHARS - CHECKSUM_CHARS;
        let mut secret = String::with_capacity(prefix.len() + SECRET_CHARS);
        secret.push_str(prefix);
        while secret.len() < random_end {
            // Rejection sampling keeps every character uniform: 248 = 4 × 62.
            for byte in random_bytes::<32>() {
                if byte < 248 && secret.len() < random_end {
                    secret.push(BASE62[(byte % 62) as usize] as char);
                }
            }
        }
        let sum = checksum(&secret);
        secret.extend(sum.iter().map(|&b| char::from(b)));
        KeySecret {
            secret,
            prefix_len: prefix.len(),
        }
    }

    pub fn expose(&self) -> &str {
        &self.secret
    }

    pub fn into_string(self) -> String {
        self.secret
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.secret)
    }

    /// The prefix plus the first 4 random characters, safe to display.
    pub fn display_prefix(&self) -> String {
        self.secret[..self.prefix_len + 4].to_owned()
    }

    pub fn last4(&self) -> String {
        self.secret[self.secret.len() - 4..].to_owned()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecret({}…{})", self.display_prefix(), self.last4())
    }
}

/// The base62 CRC-32 of `text`, `CHECKSUM_CHARS` long.
fn checksum(text: &str) -> [u8; CHECKSUM_CHARS] {
    let mut value = u64::from(crc32fast::hash(text.as_bytes()));
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Whether `secret` has the shape of a generated secret (40 base62
/// characters after its prefix) and its last 6 are the checksum of the rest.
///
/// The gateway rejects a secret that fails this before asking the store, so
/// a storm of made-up keys costs a CRC, not a lookup each (secret scanners
/// use the same check to tell a real leak from noise).
pub fn has_valid_checksum(secret: &str) -> bool {
    let bytes = secret.as_bytes();
    if bytes.len() <= SECRET_CHARS
        || !bytes[bytes.len() - SECRET_CHARS..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let (body, sum) = secret.split_at(secret.len() - CHECKSUM_CHARS);
    checksum(body) == sum.as_bytes()
}

/// Whether `prefix` can start a key: short, and only characters that need
/// no escaping in headers, URLs or shells.
pub fn valid_key_prefix(prefix: &str) -> bool {
    (2..=16).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_unique_and_hash_stably() {
        let a = KeySecret::generate(DEFAULT_KEY_PREFIX);
        let b = KeySecret::generate(DEFAULT_KEY_PREFIX);
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("sk-maas-"));
        assert_eq!(a.expose().len(), 48);
        assert!(a.expose()[8..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.hash(), KeyHash::of(a.expose()));
        assert_eq!(a.display_prefix().len(), 12);
        assert!(a.expose().ends_with(&a.last4()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn generated_secrets_carry_a_checksum_that_catches_typos() {
        for prefix in [DEFAULT_KEY_PREFIX, "acme_", "mt"] {
            let secret = KeySecret::generate(prefix).into_string();
            assert!(has_valid_checksum(&secret), "{secret}");
            // Any one character changed, anywhere, fails the check.
            for at in 0..secret.len() {
                let mut changed = secret.clone().into_bytes();
                changed[at] = if changed[at] == b'x' { b'y' } else { b'x' };
                assert!(!has_valid_checksum(std::str::from_utf8(&changed).unwrap()), "{at}");
            }
            assert!(!has_valid_checksum(&secret[..secret.len() - 1]));
            assert!(!has_valid_checksum(&format!("{secret}0")));
        }
        for made_up in [
            "",
            "sk-maas-unknown",
            "sk-maas-",
            "sk-maas-ÄÖÜ",
            &"a".repeat(48),
            &"é".repeat(40),
        ] {
            assert!(!has_valid_checksum(made_up), "{made_up}");
        }
    }

    #[test]
    fn known_sha256() {
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let hash = KeyHash::of("abc");
        assert_eq!(hash.to_hex().parse::<KeyHash>().unwrap(), hash);
        assert!("xyz".parse::<KeyHash>().is_err());
    }

    #[test]
    fn prefixes() {
        assert!(valid_key_prefix("sk-maas-"));
        assert!(!valid_key_prefix("sk maas"));
        assert!(!valid_key_prefix(""));
    }
}

/// What an admin token may do with `/admin/api/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdminScope {
    Read,
    Write,
}

/// A token of the admin API, stored as its hash like an API key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdminToken {
    pub id: String,
    /// Who or what uses it (`ci`, `grafana`); named in the audit log.
    pub name: String,
    pub scope: AdminScope,
    pub hash: KeyHash,
    pub last4: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}
