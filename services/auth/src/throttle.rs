//! Rate limiting of failed sign-ins, per account and per client address.
//!
//! Each subject (`account:<normalized email>`, `address:<ip>`) may fail `max` times per window.
//! Every attempt first reserves a place in each subject's budget, in one atomic statement, before
//! any password work: it goes ahead only while the subject's failures plus the attempts being
//! checked right now (its own included) stay within `max`, so any number of concurrent guesses,
//! on one replica or many, get at most `max` passwords checked per window. A wrong password turns
//! its reservation into a failure; a right one clears its account's failures and gives its place
//! back (an address's count is not cleared: it counts everyone behind the address); a refusal or
//! a failure of ours gives it back too.
//!
//! A refused attempt learns when to come back: at the window's end when the failures fill the
//! budget, in a second when attempts being checked fill it (they finish within tens of ms).
//! Unknown emails are counted like known ones, so the limit reveals nothing about which accounts
//! exist. The caller settles every reservation even if its client goes away (see
//! `Auth::sign_in`); one held by a replica that died is counted until its window ends.

use std::time::Duration;

use sqlx::AnyPool;

use crate::db::throttle;
use crate::error::AuthError;
use crate::tokens;

/// When to come back when attempts being checked (not failures) fill a budget.
const RETRY_WHILE_CHECKING: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignInLimits {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self {
            per_account: 5,
            per_address: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// The subjects one sign-in attempt counts against, with their limits.
pub struct Subjects {
    pub account: String,
    pub address: Option<String>,
}

impl Subjects {
    pub fn new(normalized_email: &str, client_address: &str) -> Self {
        let address = client_address.trim();
        Self {
            account: format!("account:{normalized_email}"),
            address: (!address.is_empty()).then(|| format!("address:{address}")),
        }
    }
}

/// The places one attempt holds: `(subject, the start of the window it was counted in)`.
#[derive(Debug)]
#[must_use = "a reservation must be settled: failed, succeeded or released"]
pub struct Reservation {
    account: (String, i64),
    address: Option<(String, i64)>,
}

pub struct Throttle {
    pool: AnyPool,
    limits: SignInLimits,
}

impl Throttle {
    pub fn new(pool: AnyPool, limits: SignInLimits) -> Self {
        Self { pool, limits }
    }

    /// Reserves a place for one attempt against each subject, or refuses with
    /// [`AuthError::RateLimited`] (holding nothing) when a subject's budget is full.
    pub async fn reserve(&self, subjects: &Subjects, now: i64) -> Result<Reservation, AuthError> {
        let account = self
            .reserve_one(&subjects.account, self.limits.per_account, now)
            .await?;
        let Some(address) = &subjects.address else {
            return Ok(Reservation {
                account,
                address: None,
            });
        };
        match self
            .reserve_one(address, self.limits.per_address, now)
            .await
        {
            Ok(address) => Ok(Reservation {
                account,
                address: Some(address),
            }),
            Err(error) => {
                self.release_one(&account).await;
                Err(error)
            }
        }
    }

    /// The password was wrong: the reservation stays, as a failure.
    pub async fn failed(&self, reservation: Reservation) -> Result<(), AuthError> {
        for (subject, window_started_at) in reservation.held() {
            throttle::fail(&self.pool, subject, *window_started_at).await?;
        }
        Ok(())
    }

    /// The password was right: the account's failures are forgotten and the places given back.
    pub async fn succeeded(&self, reservation: Reservation) -> Result<(), AuthError> {
        let (account, window_started_at) = &reservation.account;
        throttle::succeed(&self.pool, account, *window_started_at).await?;
        if let Some(address) = &reservation.address {
            self.release_one(address).await;
        }
        Ok(())
    }

    /// The attempt ended without an answer about the password (a failure of ours): the places are
    /// given back. Best effort: a place not given back only counts until its window ends.
    pub async fn release(&self, reservation: Reservation) {
        for held in reservation.held() {
            self.release_one(held).await;
        }
    }

    /// Forgets ended windows.
    pub async fn prune(&self, now: i64) -> Result<(), AuthError> {
        throttle::prune(&self.pool, self.window_start_cutoff(now)).await?;
        Ok(())
    }

    async fn reserve_one(
        &self,
        subject: &str,
        max: u32,
        now: i64,
    ) -> Result<(String, i64), AuthError> {
        let window =
            throttle::reserve(&self.pool, subject, now, self.window_start_cutoff(now)).await?;
        let held = (subject.to_owned(), window.started_at);
        let max = i64::from(max);
        if window.failures + window.pending <= max {
            return Ok(held);
        }
        self.release_one(&held).await;
        let retry_after_ms = if window.failures >= max {
            tokens::after(window.started_at, self.limits.window).saturating_sub(now)
        } else {
            crate::service::millis(RETRY_WHILE_CHECKING)
        };
        let retry_after_secs = u64::try_from(retry_after_ms).unwrap_or(1).div_ceil(1000);
        Err(AuthError::RateLimited {
            retry_after_secs: retry_after_secs.max(1),
        })
    }

    async fn release_one(&self, (subject, window_started_at): &(String, i64)) {
        if let Err(error) = throttle::release(&self.pool, subject, *window_started_at).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot give back a sign-in reservation; it counts until its window ends"
            );
        }
    }

    /// Windows that started at or before this have ended.
    fn window_start_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(i64::try_from(self.limits.window.as_millis()).unwrap_or(i64::MAX))
    }
}

impl Reservation {
    fn held(&self) -> impl Iterator<Item = &(String, i64)> {
        std::iter::once(&self.account).chain(self.address.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_account_and_the_address_when_known() {
        let subjects = Subjects::new("a@example.com", " 10.0.0.7 ");
        assert_eq!(subjects.account, "account:a@example.com");
        assert_eq!(subjects.address.as_deref(), Some("address:10.0.0.7"));
        assert_eq!(Subjects::new("a@example.com", "").address, None);
    }
}
