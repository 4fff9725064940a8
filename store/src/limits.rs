//! Limit arithmetic: whether a request's demand fits under each limit and
//! how much of a reservation's grant every limit leaves room for. Both
//! store backends (Redis in Lua, which mirrors [`decide`] line by line) and
//! the proxy's local limits decide with it, so every mode admits alike.

/// The arithmetic part of a [`CounterCheck`](crate::backend::CounterCheck):
/// what [`decide`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub max: u64,
    pub add: u64,
    pub hold: u64,
    /// What each granted unit (completion token) adds to this check: 1 on
    /// a token limit, the completion price on a spend budget, 0 when the
    /// grant is not counted here.
    pub grant_rate: u64,
}

/// The flexible part of a reservation: as much as fits, at most `max`;
/// admission fails when less than `min` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub max: u64,
    pub min: u64,
}

/// How much of `metric` a request's `deltas` add (a metric named twice
/// counts twice).
pub fn delta_of<M: AsRef<str>>(deltas: &[(M, u64)], metric: &str) -> u64 {
    deltas
        .iter()
        .filter(|(m, _)| m.as_ref() == metric)
        .map(|(_, v)| *v)
        .fold(0, u64::saturating_add)
}

/// Whether `need` more fits under `max` with `used` spent; needing nothing
/// (a metric counted after the response) fits while not yet spent.
pub fn admits(max: u64, used: u64, need: u64) -> bool {
    if need == 0 {
        used < max
    } else {
        used.checked_add(need).is_some_and(|total| total <= max)
    }
}

/// What a reservation takes of each check: `Ok((granted, amounts))` with
/// the amount held per check, or `Err((index, used))` of the check that
/// refused. `used[i]` is check `i`'s counter plus its holds; without a
/// grant (no reservation) nothing is held. Both backends and the proxy's
/// local limits decide with this arithmetic (Redis in Lua, which mirrors
/// it line by line).
pub fn decide(demands: &[Demand], used: &[u64], grant: Option<Grant>) -> Result<(u64, Vec<u64>), (usize, u64)> {
    let mut granted = grant.map_or(0, |g| g.max);
    // The check whose room bounds the grant, reported when it is too small.
    let mut tightest = None;
    for (index, (demand, &used)) in demands.iter().zip(used).enumerate() {
        let hold = if grant.is_some() { demand.hold } else { 0 };
        let rate = if grant.is_some() { demand.grant_rate } else { 0 };
        let need = demand.add.saturating_add(hold);
        if rate == 0 {
            if !admits(demand.max, used, need) {
                return Err((index, used));
            }
            continue;
        }
        let Some(room) = demand.max.checked_sub(used).and_then(|left| left.checked_sub(need)) else {
            return Err((index, used));
        };
        let room = room / rate;
        if tightest.is_none() || room < granted {
            granted = granted.min(room);
            tightest = Some((index, used));
        }
    }
    let Some(grant) = grant else {
        return Ok((0, vec![0; demands.len()]));
    };
    let granted = match tightest {
        Some(tightest) if granted < grant.min => return Err(tightest),
        Some(_) => granted,
        None => 0,
    };
    let amounts = demands
        .iter()
        .map(|d| d.hold.saturating_add(granted.saturating_mul(d.grant_rate)))
        .collect();
    Ok((granted, amounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: u64, add: u64, hold: u64, takes_grant: bool) -> Demand {
        Demand {
            max,
            add,
            hold,
            grant_rate: u64::from(takes_grant),
        }
    }

    fn reservation(max: u64, min: u64) -> Option<Grant> {
        Some(Grant { max, min })
    }

    #[test]
    fn plain_checks_count_or_admit_while_unspent() {
        let checks = [check(10, 1, 0, false), check(100, 0, 0, false)];
        assert_eq!(decide(&checks, &[9, 99], None), Ok((0, vec![0, 0])));
        assert_eq!(decide(&checks, &[10, 0], None), Err((0, 10)));
        assert_eq!(
            decide(&checks, &[0, 100], None),
            Err((1, 100)),
            "a spent metric refuses"
        );
    }

    #[test]
    fn the_grant_is_what_the_tightest_check_has_room_for() {
        // total_tokens (prompt 30 + grant) and completion_tokens (grant).
        let checks = [check(1_000, 0, 30, true), check(500, 0, 0, true)];
        let wanted = reservation(200, 1);
        assert_eq!(decide(&checks, &[0, 0], wanted), Ok((200, vec![230, 200])));
        assert_eq!(decide(&checks, &[900, 0], wanted), Ok((70, vec![100, 70])));
        assert_eq!(decide(&checks, &[0, 450], wanted), Ok((50, vec![80, 50])));
        assert_eq!(
            decide(&checks, &[970, 0], wanted),
            Err((0, 970)),
            "the prompt fits, no completion does"
        );
        assert_eq!(
            decide(&checks, &[980, 0], wanted),
            Err((0, 980)),
            "not even the prompt fits"
        );
        assert_eq!(decide(&checks, &[0, 500], wanted), Err((1, 500)));
    }

    #[test]
    fn holds_without_a_grant() {
        // An embedding: its prompt is held, nothing is generated.
        let checks = [check(100, 0, 40, false)];
        assert_eq!(decide(&checks, &[60], reservation(0, 0)), Ok((0, vec![40])));
        assert_eq!(decide(&checks, &[61], reservation(0, 0)), Err((0, 61)));
    }

    #[test]
    fn a_spend_budget_grants_what_its_money_buys() {
        // A budget of 1,000,000 nanos; the prompt costs 30 × 1,500 and each
        // completion token 2,000, beside a token limit of 1,000.
        let spend = Demand {
            max: 1_000_000,
            add: 0,
            hold: 45_000,
            grant_rate: 2_000,
        };
        let checks = [check(1_000, 0, 30, true), spend];
        let wanted = reservation(800, 1);
        // (1,000,000 − 45,000) / 2,000 = 477 tokens, fewer than the token limit's 970.
        assert_eq!(decide(&checks, &[0, 0], wanted), Ok((477, vec![507, 999_000])));
        // 1,999 nanos left after the prompt buy no completion token.
        assert_eq!(decide(&checks, &[0, 953_001], wanted), Err((1, 953_001)));
        assert_eq!(decide(&checks, &[0, 953_000], wanted), Ok((1, vec![31, 47_000])));
        // A free model's tokens are not counted against money.
        let free = Demand {
            hold: 0,
            grant_rate: 0,
            ..spend
        };
        assert_eq!(decide(&[free], &[999_999], wanted), Ok((0, vec![0])));
    }
}
