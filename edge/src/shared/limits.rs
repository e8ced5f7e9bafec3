//! Rate limits of this node: sends per user, failed handshakes per client address.
//!
//! Each limit is a generic cell rate (GCRA): a subject may do `burst` things at once, then one
//! every `1 / per_second` seconds; a refusal says how long until the next is allowed. Limits are
//! kept per edge node, in memory, so behind a load balancer a subject gets up to the limit on
//! each node (see `docs/decisions.md`); a subject whose allowance is full again is forgotten.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crawbl_infra::config;
use tokio::time::Instant;

use crate::shared::peer::TrustedProxies;

/// How often a limiter forgets subjects whose allowance is full again.
const PRUNE_EVERY: u32 = 4096;

/// Sends per user: a person types far slower; scripts with API keys get bursts of 20.
pub const DEFAULT_SENDS: RateLimit = RateLimit {
    per_second: 5.0,
    burst: 20,
};
/// Failed handshakes per client address: a client with a bad token retries with backoff, a
/// flood of bad handshakes is refused before any token is checked.
pub const DEFAULT_FAILED_HANDSHAKES: RateLimit = RateLimit {
    per_second: 1.0,
    burst: 20,
};

/// This node's limits, and who the client is behind proxies.
pub struct Limits {
    pub sends: Limiter,
    pub failed_handshakes: Limiter,
    pub trusted_proxies: TrustedProxies,
}

/// `burst` at once, then `per_second`; `per_second` 0 turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    /// `{PREFIX}_PER_SECOND` and `{PREFIX}_BURST`, or the defaults.
    pub fn from_env(prefix: &str, default: Self) -> anyhow::Result<Self> {
        let limit = Self {
            per_second: config::parse_or(&format!("{prefix}_PER_SECOND"), default.per_second)?,
            burst: config::parse_or(&format!("{prefix}_BURST"), default.burst)?,
        };
        anyhow::ensure!(
            limit.per_second >= 0.0 && limit.per_second.is_finite(),
            "{prefix}_PER_SECOND must be 0 (off) or a positive number"
        );
        anyhow::ensure!(limit.burst >= 1, "{prefix}_BURST must be at least 1");
        Ok(limit)
    }
}

pub struct Limiter {
    /// Time per thing, and how far ahead of now a subject may run (`burst - 1` things).
    pace: Option<(Duration, Duration)>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When each subject's allowance is full again (its "theoretical arrival time").
    full_at: HashMap<String, Instant>,
    since_prune: u32,
}

/// Refused: the subject may try again after this long.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        let pace = (limit.per_second > 0.0).then(|| {
            let interval = Duration::from_secs_f64(1.0 / limit.per_second);
            (interval, interval * (limit.burst - 1))
        });
        Self {
            pace,
            state: Mutex::default(),
        }
    }

    /// Counts one thing of `subject`, or refuses it without counting.
    pub fn take(&self, subject: &str) -> Result<(), Limited> {
        self.take_at(subject, Instant::now())
    }

    /// Refuses if `subject` has nothing left, without counting anything.
    pub fn check(&self, subject: &str) -> Result<(), Limited> {
        let Some((_, tolerance)) = self.pace else {
            return Ok(());
        };
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.full_at.get(subject) {
            Some(full_at) => refusal(*full_at, now, tolerance),
            None => Ok(()),
        }
    }

    fn take_at(&self, subject: &str, now: Instant) -> Result<(), Limited> {
        let Some((interval, tolerance)) = self.pace else {
            return Ok(());
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.since_prune += 1;
        if state.since_prune >= PRUNE_EVERY {
            state.since_prune = 0;
            state.full_at.retain(|_, full_at| *full_at > now);
        }
        let full_at = state.full_at.get(subject).copied().unwrap_or(now).max(now);
        refusal(full_at, now, tolerance)?;
        state.full_at.insert(subject.to_owned(), full_at + interval);
        Ok(())
    }
}

fn refusal(full_at: Instant, now: Instant, tolerance: Duration) -> Result<(), Limited> {
    let ahead = full_at.saturating_duration_since(now);
    if ahead > tolerance {
        return Err(Limited {
            retry_after: ahead - tolerance,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_A_SECOND_BURST_3: RateLimit = RateLimit {
        per_second: 5.0,
        burst: 3,
    };

    #[test]
    fn a_burst_is_allowed_then_one_per_interval() {
        let limiter = Limiter::new(FIVE_A_SECOND_BURST_3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take_at("u", start), Ok(()));
        }
        let refused = limiter.take_at("u", start).expect_err("past the burst");
        assert_eq!(refused.retry_after, Duration::from_millis(200));
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(
            limiter.take_at("other", start),
            Ok(()),
            "subjects are apart"
        );
        let later = start + Duration::from_millis(200);
        assert_eq!(limiter.take_at("u", later), Ok(()));
        assert!(limiter.take_at("u", later).is_err());
        // A whole burst again once the allowance is full.
        let rested = later + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(limiter.take_at("u", rested), Ok(()));
        }
    }

    #[test]
    fn refusals_are_not_counted_and_check_counts_nothing() {
        let limiter = Limiter::new(FIVE_A_SECOND_BURST_3);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take_at("u", start).expect("within the burst");
        }
        for _ in 0..100 {
            assert!(limiter.take_at("u", start).is_err());
        }
        assert_eq!(
            limiter.take_at("u", start + Duration::from_millis(200)),
            Ok(())
        );
        let fresh = Limiter::new(FIVE_A_SECOND_BURST_3);
        for _ in 0..10 {
            assert_eq!(fresh.check("u"), Ok(()));
        }
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let limiter = Limiter::new(RateLimit {
            per_second: 0.0,
            burst: 1,
        });
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.take_at("u", now), Ok(()));
        }
    }
}
