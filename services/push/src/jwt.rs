//! Compact JSON Web Tokens (RFC 7519) as the providers want them: `header.claims.signature`,
//! each unpadded base64url. Only signing lives here (ES256 for APNs and VAPID, RS256 for FCM's
//! token exchange); the providers verify.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::keys::{EcSigningKey, RsaSigningKey};

/// `header` and `claims` signed with ES256.
pub(crate) fn es256<H: Serialize, C: Serialize>(
    key: &EcSigningKey,
    header: &H,
    claims: &C,
) -> anyhow::Result<String> {
    compact(header, claims, |message| key.sign(message))
}

/// `header` and `claims` signed with RS256.
pub(crate) fn rs256<H: Serialize, C: Serialize>(
    key: &RsaSigningKey,
    header: &H,
    claims: &C,
) -> anyhow::Result<String> {
    compact(header, claims, |message| key.sign(message))
}

fn compact<H: Serialize, C: Serialize>(
    header: &H,
    claims: &C,
    sign: impl FnOnce(&[u8]) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<String> {
    let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
    let signature = sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// Seconds since the Unix epoch, for `iat` and `exp`.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
