//! What decides who waits when a backend is saturated: a backend's
//! `saturation:` thresholds, a product's `queue:` bounds and a plan's
//! `priority:`. The proxy's gateway queue applies them
//! (`proxy/src/upstream/queue.rs`); they are declared here, with the
//! catalog they belong to.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// `priority:` of a plan: when its backend is saturated, requests of a
/// higher priority leave the gateway's queue first. Catalogs written
/// before the words took a number (higher first, 0 by default): 0 reads
/// as `normal`, any other number as `high`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    /// Highest first, the order the queue serves them in.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// vLLM's `priority` for this plan priority (lower runs sooner; 0, the
    /// default, is `normal`), sent to backends with `priority_scheduling`.
    pub fn queue_priority(self) -> i64 {
        match self {
            Priority::High => -1,
            Priority::Normal => 0,
            Priority::Low => 1,
        }
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Priority, D::Error> {
        struct Words;
        impl Visitor<'_> for Words {
            type Value = Priority;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one of `high`, `normal`, `low`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Priority, E> {
                match v {
                    "high" => Ok(Priority::High),
                    "normal" => Ok(Priority::Normal),
                    "low" => Ok(Priority::Low),
                    other => Err(E::custom(format!(
                        "unknown priority `{other}`, expected one of `high`, `normal`, `low`"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Priority, E> {
                Ok(if v == 0 { Priority::Normal } else { Priority::High })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Priority, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("a priority is `high`, `normal` or `low`")),
                }
            }
        }
        deserializer.deserialize_any(Words)
    }
}

/// `saturation:` of a backend: when every replica that takes requests is
/// saturated, new requests wait in the gateway's queue rather than in the
/// model servers' own. A replica is saturated when its fresh `/metrics`
/// (read every 200 ms) show `waiting` requests in its queue (counting
/// those this proxy sent since the reading, less those that ended) or
/// `kv_cache_percent` of its KV cache in use, or when this proxy has
/// `in_flight` requests at it. The first two defaults are the Gateway API
/// Inference Extension's (queue depth 5, KV cache 80 %).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Saturation {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub waiting: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub kv_cache_percent: u32,
    /// Unset: no cap of this proxy's own (metrics alone decide).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub in_flight: Option<u32>,
}

impl Default for Saturation {
    fn default() -> Self {
        Saturation {
            waiting: 5,
            kv_cache_percent: 80,
            in_flight: None,
        }
    }
}

/// `queue:` of a product: how long its requests may wait in the gateway
/// while its backend is saturated (`max_queue_ms`) and how many may wait
/// at once (`max_waiting`). Past either, a request is answered 429 with
/// `Retry-After`, never left to time out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct QueuePolicy {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_queue_ms: u64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_waiting: u32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            max_queue_ms: 10_000,
            max_waiting: 1_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_read_as_words_or_as_the_old_numbers() {
        let read = |json: &str| serde_json::from_str::<Priority>(json);
        assert_eq!(read("\"high\"").unwrap(), Priority::High);
        assert_eq!(read("\"low\"").unwrap(), Priority::Low);
        assert_eq!(read("0").unwrap(), Priority::Normal);
        assert_eq!(read("10").unwrap(), Priority::High);
        let error = read("\"urgent\"").unwrap_err().to_string();
        assert!(error.contains("`high`, `normal`, `low`"), "{error}");
        assert!(read("-1").is_err());
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
        assert_eq!(serde_json::to_string(&Priority::Low).unwrap(), "\"low\"");
    }
}
