//! Prices as exact micro-units, so costs add up without float drift.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// An amount of money in millionths of the plan's currency unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    pub micros: u64,
}

const MICROS: u64 = 1_000_000;

impl Money {
    pub const fn from_micros(micros: u64) -> Self {
        Money { micros }
    }

    /// Parses a decimal such as `0.0015`; at most six decimals.
    pub fn parse(text: &str) -> Result<Money, String> {
        let text = text.trim();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) if digits(fraction) => (whole, fraction),
            Some(_) => return Err(format!("`{text}` is not a non-negative decimal amount")),
            None => (text, ""),
        };
        if !digits(whole) {
            return Err(format!("`{text}` is not a non-negative decimal amount"));
        }
        if fraction.len() > 6 {
            return Err(format!("`{text}` has more than 6 decimals"));
        }
        let whole: u64 = whole.parse().map_err(|_| format!("`{text}` is too large"))?;
        let scale = 10u64.pow(6 - fraction.len() as u32);
        let fraction: u64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().unwrap_or(0)
        };
        whole
            .checked_mul(MICROS)
            .and_then(|w| w.checked_add(fraction * scale))
            .map(Money::from_micros)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.micros / MICROS;
        let fraction = self.micros % MICROS;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A number in YAML/JSON; `Display` is exact and `f64` parses it back exactly.
        let value: f64 = self.to_string().parse().map_err(serde::ser::Error::custom)?;
        serializer.serialize_f64(value)
    }
}

/// In the OpenAPI document: a non-negative number (a decimal string such as
/// `"0.0015"` is accepted too, as `Deserialize` reads it).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0))
            .description(Some("An amount in the plan's currency, at most 6 decimals."))
            .examples([serde_json::json!(0.0015)])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Money {}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MoneyVisitor;
        impl de::Visitor<'_> for MoneyVisitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative amount with at most 6 decimals")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                v.checked_mul(MICROS)
                    .map(Money::from_micros)
                    .ok_or_else(|| E::custom("amount too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("amount must not be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom("amount must be a non-negative number"));
                }
                // Shortest round-trip formatting gives back the decimal that was written.
                Money::parse(&format!("{v}")).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(MoneyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_decimals_exactly() {
        for text in ["0", "1", "0.5", "0.0015", "12.000001", "3.1"] {
            assert_eq!(Money::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Money::parse("0.0015").unwrap().micros, 1_500);
        assert!(Money::parse("-1").is_err());
        assert!(Money::parse("0.0000001").is_err());
        assert!(Money::parse("abc").is_err());
        assert!(Money::parse("1.").is_err());
    }

    #[test]
    fn json_round_trip_is_exact() {
        let money = Money::parse("0.0003").unwrap();
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, "0.0003");
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        assert!(serde_json::from_str::<Money>("-0.5").is_err());
        assert_eq!(serde_json::from_str::<Money>("\"2.5\"").unwrap().micros, 2_500_000);
    }
}
