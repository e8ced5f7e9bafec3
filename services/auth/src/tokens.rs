//! Every rule about tokens lives here: their shape, lifetimes, and how they are checked.
//!
//! - **Access tokens** are JWTs signed with Ed25519 (`alg` `EdDSA`, a `kid` naming the key):
//!   claims `iss` `crawbl-auth`, `aud` `crawbl-edge`, `sub` (user id), `sid` (session id), `iat`,
//!   `exp` (seconds). Edges verify them with the public keys alone; nothing is stored per token.
//! - **Refresh tokens** (`crt_`) and **API keys** (`cak_`) are opaque: a prefix and 32 random
//!   bytes in unpadded base64url. Only their SHA-256 hashes are stored (they are high-entropy, so a
//!   fast hash suffices), so a database leak reveals no usable token.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crawbl_infra::jws::{self, PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ISSUER: &str = "crawbl-auth";
/// Who access tokens are for: the edge nodes.
pub const AUDIENCE: &str = "crawbl-edge";
pub const REFRESH_TOKEN_PREFIX: &str = "crt_";
pub const API_KEY_PREFIX: &str = "cak_";
/// Anything longer is rejected before any other work is done.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// How many characters of an API key are kept to tell keys apart (`cak_` and 8 more).
pub const API_KEY_DISPLAY_CHARS: usize = 12;
const RANDOM_BYTES: usize = 32;
/// 32 bytes in unpadded base64.
const ENCODED_CHARS: usize = 43;

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user.
    pub sub: String,
    /// The session.
    pub sid: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds: invalid from this second on.
    pub exp: i64,
}

/// An access token in clear and when it expires.
pub struct AccessToken {
    pub token: String,
    /// Seconds it is valid for, as told to the client.
    pub expires_in: i64,
}

/// Signs an access token for `user_id`'s session `session_id`, valid for `ttl` from `now_ms`.
pub fn issue_access_token(
    key: &SigningKey,
    user_id: &str,
    session_id: &str,
    now_ms: i64,
    ttl: Duration,
) -> anyhow::Result<AccessToken> {
    let iat = now_ms.div_euclid(1000);
    let expires_in = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = AccessClaims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: user_id.to_owned(),
        sid: session_id.to_owned(),
        iat,
        exp: iat.saturating_add(expires_in),
    };
    Ok(AccessToken {
        token: key.sign(&claims)?,
        expires_in,
    })
}

/// Why an access token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessTokenError {
    /// Not a token of ours: malformed, unknown key, bad signature, wrong issuer or audience.
    Invalid,
    /// Genuine, but past its `exp`.
    Expired,
}

/// The claims of `token` if it is a valid access token at `now_ms`: genuine (see
/// [`authentic_access_token`]) and not expired ([`AccessTokenError::Expired`] otherwise).
pub fn verify_access_token(
    token: &str,
    keys: &[PublicKey],
    now_ms: i64,
) -> Result<AccessClaims, AccessTokenError> {
    let claims = authentic_access_token(token, keys)?;
    if now_ms.div_euclid(1000) >= claims.exp {
        return Err(AccessTokenError::Expired);
    }
    Ok(claims)
}

/// The claims of `token` if it is genuine: signed by one of `keys`, with our issuer and audience.
/// Expiry is not checked.
pub fn authentic_access_token(
    token: &str,
    keys: &[PublicKey],
) -> Result<AccessClaims, AccessTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AccessTokenError::Invalid);
    }
    let parsed = jws::parse(token).map_err(|_| AccessTokenError::Invalid)?;
    let key = keys
        .iter()
        .find(|key| key.kid() == parsed.kid())
        .ok_or(AccessTokenError::Invalid)?;
    let claims: AccessClaims = parsed.verify(key).map_err(|_| AccessTokenError::Invalid)?;
    if claims.iss != ISSUER || claims.aud != AUDIENCE {
        return Err(AccessTokenError::Invalid);
    }
    Ok(claims)
}

/// A fresh refresh token and its stored hash.
pub fn new_refresh_token() -> (String, String) {
    let token = generate(REFRESH_TOKEN_PREFIX);
    let hash = hash(&token);
    (token, hash)
}

/// A fresh API key and its stored hash.
pub fn new_api_key() -> (String, String) {
    let key = generate(API_KEY_PREFIX);
    let hash = hash(&key);
    (key, hash)
}

/// The stored hash to look a refresh token up by, or `None` when `token` cannot be one (wrong
/// prefix or shape), so garbage never reaches the database.
pub fn refresh_token_lookup_key(token: &str) -> Option<String> {
    lookup_key(token, REFRESH_TOKEN_PREFIX)
}

/// The stored hash to look an API key up by, or `None` when `key` cannot be one.
pub fn api_key_lookup_key(key: &str) -> Option<String> {
    lookup_key(key, API_KEY_PREFIX)
}

/// Whether `token` looks like an API key (as opposed to an access token).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

fn lookup_key(token: &str, prefix: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let encoded = token.strip_prefix(prefix)?;
    let well_formed = encoded.len() == ENCODED_CHARS
        && encoded
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    well_formed.then(|| hash(token))
}

/// Whether something that expires at `expires_at` has expired at `now` (both Unix milliseconds).
pub fn has_expired(expires_at: i64, now: i64) -> bool {
    now >= expires_at
}

/// `now` (Unix milliseconds) plus `duration`, saturating.
pub fn after(now: i64, duration: Duration) -> i64 {
    now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW_MS: i64 = 1_800_000_000_000;

    fn key(kid: &str) -> SigningKey {
        SigningKey::generate(kid)
    }

    #[test]
    fn an_access_token_verifies_with_its_key_until_it_expires() {
        let key = key("k1");
        let issued = issue_access_token(&key, "user-1", "session-1", NOW_MS, HOUR).expect("sign");
        assert_eq!(issued.expires_in, 3600);
        let keys = [key.public_key()];

        let claims = verify_access_token(&issued.token, &keys, NOW_MS).expect("valid");
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.sid, "session-1");
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            (ISSUER, AUDIENCE)
        );
        assert_eq!(claims.exp - claims.iat, 3600);

        let last_valid_ms = (claims.exp * 1000) - 1;
        assert!(verify_access_token(&issued.token, &keys, last_valid_ms).is_ok());
        assert_eq!(
            verify_access_token(&issued.token, &keys, claims.exp * 1000),
            Err(AccessTokenError::Expired)
        );
    }

    #[test]
    fn a_zero_ttl_token_is_expired_at_once() {
        let key = key("k1");
        let issued =
            issue_access_token(&key, "user-1", "session-1", NOW_MS, Duration::ZERO).expect("sign");
        assert_eq!(
            verify_access_token(&issued.token, &[key.public_key()], NOW_MS),
            Err(AccessTokenError::Expired)
        );
    }

    #[test]
    fn unknown_keys_other_audiences_and_garbage_are_invalid() {
        let key = key("k1");
        let issued = issue_access_token(&key, "u", "s", NOW_MS, HOUR).expect("sign");
        assert_eq!(
            verify_access_token(&issued.token, &[self::key("k2").public_key()], NOW_MS),
            Err(AccessTokenError::Invalid)
        );
        let elsewhere = key
            .sign(&AccessClaims {
                iss: ISSUER.to_owned(),
                aud: "crawbl-admin".to_owned(),
                sub: "u".to_owned(),
                sid: "s".to_owned(),
                iat: NOW_MS / 1000,
                exp: NOW_MS / 1000 + 60,
            })
            .expect("sign");
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        for token in ["", "garbage", "a.b.c", elsewhere.as_str(), huge.as_str()] {
            assert_eq!(
                verify_access_token(token, &[key.public_key()], NOW_MS),
                Err(AccessTokenError::Invalid),
                "{token:?}"
            );
        }
    }

    #[test]
    fn opaque_tokens_have_their_prefix_are_unique_and_find_their_own_hash() {
        let (first, first_hash) = new_refresh_token();
        let (second, _) = new_refresh_token();
        assert!(first.starts_with("crt_"));
        assert_eq!(first.len(), 4 + ENCODED_CHARS);
        assert_ne!(first, second);
        assert_ne!(first_hash, first);
        assert_eq!(refresh_token_lookup_key(&first), Some(first_hash));

        let (key, key_hash) = new_api_key();
        assert!(key.starts_with("cak_") && is_api_key(&key));
        assert_eq!(api_key_lookup_key(&key), Some(key_hash));
        // Each kind only finds its own kind.
        assert_eq!(refresh_token_lookup_key(&key), None);
        assert_eq!(api_key_lookup_key(&first), None);
    }

    #[test]
    fn malformed_opaque_tokens_have_no_lookup_key() {
        let (token, _) = new_refresh_token();
        let huge = format!("crt_{}", "a".repeat(10_000));
        for candidate in [
            "",
            "crt_",
            "garbage",
            &token[..20],
            &huge,
            "crt_ééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            assert_eq!(refresh_token_lookup_key(candidate), None, "{candidate:?}");
        }
    }

    #[test]
    fn expiry_is_inclusive_of_the_instant() {
        assert!(!has_expired(3_000, 2_999));
        assert!(has_expired(3_000, 3_000));
        assert_eq!(after(1_000, Duration::from_secs(2)), 3_000);
    }
}
