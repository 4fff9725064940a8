//! Periods of usage limits and the time buckets usage is counted in.
//!
//! All buckets are UTC calendar units: a `minute` bucket starts at second 0,
//! a `week` on Monday 00:00, a `month` on the 1st. Limits and charts share
//! the same buckets, so "used this month" and the month bar of a chart agree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Eternity,
}

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

impl Period {
    pub const ALL: [Period; 7] = [
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
        Period::Eternity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
            Period::Eternity => "eternity",
        }
    }

    /// Unix second at which the bucket holding `at` starts.
    pub fn bucket_start(self, at: i64) -> i64 {
        let at = at.clamp(MIN_TS, MAX_TS);
        match self {
            Period::Minute => at.div_euclid(MINUTE) * MINUTE,
            Period::Hour => at.div_euclid(HOUR) * HOUR,
            Period::Day => at.div_euclid(DAY) * DAY,
            // 1970-01-01 was a Thursday: shift so weeks start on Monday.
            Period::Week => (at + 3 * DAY).div_euclid(7 * DAY) * 7 * DAY - 3 * DAY,
            Period::Month => {
                let date = date_of(at);
                start_of(date.year(), date.month())
            }
            Period::Year => start_of(date_of(at).year(), Month::January),
            Period::Eternity => 0,
        }
    }

    /// Unix second at which the bucket starting at `start` ends (exclusive);
    /// `i64::MAX` for eternity.
    pub fn bucket_end(self, start: i64) -> i64 {
        let start = start.clamp(MIN_TS, MAX_TS);
        match self {
            Period::Minute => start + MINUTE,
            Period::Hour => start + HOUR,
            Period::Day => start + DAY,
            Period::Week => start + 7 * DAY,
            Period::Month => {
                let date = date_of(start);
                match date.month() {
                    Month::December => start_of(date.year() + 1, Month::January),
                    month => start_of(date.year(), month.next()),
                }
            }
            Period::Year => start_of(date_of(start).year() + 1, Month::January),
            Period::Eternity => i64::MAX,
        }
    }

    /// How long counters of this period are kept, in seconds; `None` = forever.
    pub fn retention_secs(self) -> Option<u64> {
        match self {
            Period::Minute => Some(48 * HOUR as u64),
            Period::Hour => Some(90 * DAY as u64),
            Period::Day | Period::Week => Some(2 * 366 * DAY as u64),
            Period::Month | Period::Year | Period::Eternity => None,
        }
    }
}

/// A set of periods: the buckets a usage record is counted in. A limit
/// script counts the buckets its limits check; the rest of a request's
/// usage goes in batches (`Store::check_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeriodSet(u8);

impl PeriodSet {
    pub const ALL: PeriodSet = PeriodSet((1 << Period::ALL.len()) - 1);
    pub const NONE: PeriodSet = PeriodSet(0);

    fn bit(period: Period) -> u8 {
        1 << Period::ALL.iter().position(|p| *p == period).unwrap_or(0)
    }

    pub fn contains(self, period: Period) -> bool {
        self.0 & Self::bit(period) != 0
    }

    #[must_use]
    pub fn with(self, period: Period) -> PeriodSet {
        PeriodSet(self.0 | Self::bit(period))
    }

    /// The periods in either.
    #[must_use]
    pub fn or(self, other: PeriodSet) -> PeriodSet {
        PeriodSet(self.0 | other.0)
    }

    /// The periods in both.
    #[must_use]
    pub fn and(self, other: PeriodSet) -> PeriodSet {
        PeriodSet(self.0 & other.0)
    }

    /// These periods but not `other`'s.
    #[must_use]
    pub fn without(self, other: PeriodSet) -> PeriodSet {
        PeriodSet(self.0 & !other.0 & Self::ALL.0)
    }

    pub fn is_all(&self) -> bool {
        self.0 & Self::ALL.0 == Self::ALL.0
    }

    pub fn is_empty(self) -> bool {
        self.0 & Self::ALL.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Period> {
        Period::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl Default for PeriodSet {
    /// Every period: a record counted nowhere yet.
    fn default() -> Self {
        PeriodSet::ALL
    }
}

fn date_of(at: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(at)
        .map(|t| t.date())
        .unwrap_or(Date::MIN)
}

// The range of years `time` represents without the `large-dates` feature.
const MIN_TS: i64 = -377_705_116_800;
const MAX_TS: i64 = 253_402_300_799;

fn start_of(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(MAX_TS)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown period `{s}` (minute, hour, day, week, month, year, eternity)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ts(t: OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    #[test]
    fn buckets_follow_the_calendar() {
        let at = ts(datetime!(2026-11-26 13:47:59 UTC));
        assert_eq!(Period::Minute.bucket_start(at), ts(datetime!(2026-11-26 13:47:00 UTC)));
        assert_eq!(Period::Hour.bucket_start(at), ts(datetime!(2026-11-26 13:00:00 UTC)));
        assert_eq!(Period::Day.bucket_start(at), ts(datetime!(2026-11-26 00:00:00 UTC)));
        // 2026-11-26 is a Thursday; its week starts Monday the 23rd.
        assert_eq!(Period::Week.bucket_start(at), ts(datetime!(2026-11-23 00:00:00 UTC)));
        assert_eq!(Period::Month.bucket_start(at), ts(datetime!(2026-11-01 00:00:00 UTC)));
        assert_eq!(Period::Year.bucket_start(at), ts(datetime!(2026-01-01 00:00:00 UTC)));
        assert_eq!(Period::Eternity.bucket_start(at), 0);
    }

    #[test]
    fn bucket_ends_are_next_starts() {
        let dec = ts(datetime!(2026-12-31 23:59:59 UTC));
        let new_year = ts(datetime!(2027-01-01 00:00:00 UTC));
        for period in [Period::Minute, Period::Hour, Period::Day, Period::Month, Period::Year] {
            assert_eq!(period.bucket_end(period.bucket_start(dec)), new_year, "{period}");
            assert_eq!(period.bucket_start(new_year), new_year, "{period}");
        }
        let feb = ts(datetime!(2028-02-10 00:00:00 UTC));
        assert_eq!(
            Period::Month.bucket_end(Period::Month.bucket_start(feb)),
            ts(datetime!(2028-03-01 00:00:00 UTC))
        );
        let sunday = ts(datetime!(2026-11-29 23:59:59 UTC));
        assert_eq!(
            Period::Week.bucket_end(Period::Week.bucket_start(sunday)),
            ts(datetime!(2026-11-30 00:00:00 UTC))
        );
        assert_eq!(Period::Eternity.bucket_end(0), i64::MAX);
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        for period in Period::ALL {
            for at in [i64::MIN / 2, -1, 0, i64::MAX / 2] {
                let start = period.bucket_start(at);
                let _ = period.bucket_end(start);
            }
        }
        assert_eq!(Period::Week.bucket_start(-1), ts(datetime!(1969-12-29 00:00:00 UTC)));
    }

    #[test]
    fn period_sets() {
        let set = PeriodSet::NONE.with(Period::Minute).with(Period::Month);
        assert_eq!(set.iter().collect::<Vec<_>>(), [Period::Minute, Period::Month]);
        let rest = PeriodSet::ALL.without(set);
        assert!(!rest.contains(Period::Minute) && rest.contains(Period::Day) && rest.contains(Period::Eternity));
        assert_eq!(rest.iter().count() + set.iter().count(), Period::ALL.len());
        assert!(PeriodSet::default().is_all() && PeriodSet::ALL.without(PeriodSet::ALL).is_empty());
        assert_eq!(serde_json::to_string(&set).unwrap(), "17");
        assert_eq!(serde_json::from_str::<PeriodSet>("17").unwrap(), set);
    }

    #[test]
    fn names_round_trip() {
        for period in Period::ALL {
            assert_eq!(period.as_str().parse::<Period>().unwrap(), period);
        }
        assert!("fortnight".parse::<Period>().is_err());
    }
}
