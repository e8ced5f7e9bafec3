//! Rate limiting of failed sign-ins, per account and per client address.
//!
//! Each subject (`account:<normalized email>`, `address:<ip>`) may fail `max` times per window; the
//! next attempt within the window is refused before any password work, with the seconds until
//! the window ends, whether or not the password would be right. Unknown emails are counted like
//! known ones, so the limit reveals nothing about which accounts exist. A successful sign-in
//! clears its account's count (not its address's).

use std::time::Duration;

use sqlx::AnyPool;

use crate::db::throttle;
use crate::error::AuthError;
use crate::tokens;

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

pub struct Throttle {
    pool: AnyPool,
    limits: SignInLimits,
}

impl Throttle {
    pub fn new(pool: AnyPool, limits: SignInLimits) -> Self {
        Self { pool, limits }
    }

    /// Refuses with [`AuthError::RateLimited`] when a subject has used up its failures.
    pub async fn check(&self, subjects: &Subjects, now: i64) -> Result<(), AuthError> {
        let mut retry_after_ms = 0;
        for (subject, max) in self.with_limits(subjects) {
            if let Some((window_started_at, failures)) = throttle::find(&self.pool, subject).await?
            {
                let window_ends_at = tokens::after(window_started_at, self.limits.window);
                if failures >= i64::from(max) && !tokens::has_expired(window_ends_at, now) {
                    retry_after_ms = retry_after_ms.max(window_ends_at - now);
                }
            }
        }
        if retry_after_ms > 0 {
            let retry_after_secs = u64::try_from(retry_after_ms).unwrap_or(1).div_ceil(1000);
            return Err(AuthError::RateLimited {
                retry_after_secs: retry_after_secs.max(1),
            });
        }
        Ok(())
    }

    pub async fn record_failure(&self, subjects: &Subjects, now: i64) -> Result<(), AuthError> {
        let cutoff = self.window_start_cutoff(now);
        for (subject, _) in self.with_limits(subjects) {
            throttle::record_failure(&self.pool, subject, now, cutoff).await?;
        }
        Ok(())
    }

    pub async fn record_success(&self, subjects: &Subjects) -> Result<(), AuthError> {
        throttle::clear(&self.pool, &subjects.account).await?;
        Ok(())
    }

    /// Forgets ended windows.
    pub async fn prune(&self, now: i64) -> Result<(), AuthError> {
        throttle::prune(&self.pool, self.window_start_cutoff(now)).await?;
        Ok(())
    }

    fn with_limits<'a>(&self, subjects: &'a Subjects) -> impl Iterator<Item = (&'a str, u32)> {
        let account = (subjects.account.as_str(), self.limits.per_account);
        let address = subjects
            .address
            .as_deref()
            .map(|address| (address, self.limits.per_address));
        std::iter::once(account).chain(address)
    }

    /// Windows that started at or before this have ended.
    fn window_start_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(i64::try_from(self.limits.window.as_millis()).unwrap_or(i64::MAX))
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
