//! Every rule about tokens lives here: their shape, lifetimes, and how they are looked up.
//!
//! Tokens are opaque for now: a prefix (`cat_` access, `crt_` refresh) and 32 random bytes in
//! unpadded base64url. Only their SHA-256 hashes are stored, so a database leak reveals no usable
//! token. (Signed access tokens will replace the opaque ones; callers only use this module's API.)

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub const ACCESS_TOKEN_PREFIX: &str = "cat_";
pub const REFRESH_TOKEN_PREFIX: &str = "crt_";
/// Anything longer is rejected before any other work is done.
pub const MAX_TOKEN_BYTES: usize = 512;
const RANDOM_BYTES: usize = 32;
/// 32 bytes in unpadded base64.
const ENCODED_CHARS: usize = 43;

/// A session about to be stored: its tokens in clear (handed to the client once) and what the
/// database keeps of them.
pub struct NewSession {
    pub id: String,
    pub access_token: String,
    pub refresh_token: String,
    pub access_token_hash: String,
    pub refresh_token_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    /// Seconds the access token is valid for, as told to the client.
    pub expires_in: i64,
}

impl NewSession {
    /// Fresh random tokens for a session starting at `now` (Unix milliseconds).
    pub fn issue(now: i64, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let access_token = generate(ACCESS_TOKEN_PREFIX);
        let refresh_token = generate(REFRESH_TOKEN_PREFIX);
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            access_token_hash: hash(&access_token),
            refresh_token_hash: hash(&refresh_token),
            access_token,
            refresh_token,
            created_at: now,
            access_expires_at: now.saturating_add(millis(access_ttl)),
            refresh_expires_at: now.saturating_add(millis(refresh_ttl)),
            expires_in: i64::try_from(access_ttl.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// The stored hash to look an access token up by, or `None` when `token` cannot be one of ours
/// (wrong prefix or shape, too long), so garbage never reaches the database.
pub fn access_token_lookup_key(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let encoded = token.strip_prefix(ACCESS_TOKEN_PREFIX)?;
    let well_formed = encoded.len() == ENCODED_CHARS
        && encoded
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    well_formed.then(|| hash(token))
}

/// Whether a token that expires at `expires_at` has expired at `now` (both Unix milliseconds).
pub fn has_expired(expires_at: i64, now: i64) -> bool {
    now >= expires_at
}

fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    // The thread-local generator is a CSPRNG seeded from the operating system.
    rand::fill(&mut bytes[..]);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn issued_tokens_have_their_prefix_and_are_unique() {
        let first = NewSession::issue(0, HOUR, HOUR);
        let second = NewSession::issue(0, HOUR, HOUR);
        assert!(first.access_token.starts_with("cat_"));
        assert!(first.refresh_token.starts_with("crt_"));
        assert_eq!(first.access_token.len(), 4 + ENCODED_CHARS);
        assert_ne!(first.access_token, second.access_token);
        assert_ne!(first.refresh_token, second.refresh_token);
    }

    #[test]
    fn only_hashes_are_kept_and_an_access_token_finds_its_own_hash() {
        let session = NewSession::issue(0, HOUR, HOUR);
        assert_ne!(session.access_token_hash, session.access_token);
        assert_eq!(
            access_token_lookup_key(&session.access_token),
            Some(session.access_token_hash)
        );
    }

    #[test]
    fn refresh_tokens_and_garbage_have_no_lookup_key() {
        let session = NewSession::issue(0, HOUR, HOUR);
        let huge = format!("cat_{}", "a".repeat(10_000));
        for token in [
            "",
            "cat_",
            "garbage",
            session.refresh_token.as_str(),
            &session.access_token[..20],
            &huge,
            "cat_ééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            assert_eq!(access_token_lookup_key(token), None, "{token:?}");
        }
    }

    #[test]
    fn expiry_is_computed_from_the_ttl_and_a_zero_ttl_expires_at_once() {
        let session = NewSession::issue(1_000, Duration::from_secs(2), HOUR);
        assert_eq!(session.access_expires_at, 3_000);
        assert_eq!(session.refresh_expires_at, 3_601_000);
        assert_eq!(session.expires_in, 2);
        assert!(!has_expired(session.access_expires_at, 2_999));
        assert!(has_expired(session.access_expires_at, 3_000));
        let instant = NewSession::issue(1_000, Duration::ZERO, HOUR);
        assert!(has_expired(instant.access_expires_at, 1_000));
    }
}
