//! An access token from a client, as the edge and auth read it: taken from `X-Token` or
//! `Authorization: Bearer` (`token_from_headers`), parsed as a compact JWS (`jws::parse`), its
//! Ed25519 signature checked (`Unverified::verify`), then its claims (auth's
//! `authentic_access_token` / `verify_access_token`).
//!
//! Properties: nothing panics; what `parse` accepts has the JWS shape (three parts, a key id of
//! 1..=64 bytes); a token taken from a header is trimmed and part of the header; a token that
//! verifies carries our issuer and audience and verifies the same through both entry points.
//!
//! Seeds are tokens signed with the key below (seed `[7; 32]`, kid `k1`), so mutations start
//! from tokens whose signature holds.

#![no_main]

use crawbl_auth::tokens::{self, AccessTokenError};
use crawbl_infra::jws::{self, JwsError, PublicKey, SigningKey};
use libfuzzer_sys::fuzz_target;

const SEED: [u8; 32] = [7; 32];
const NOW_MS: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    from_headers(data);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    static KEY: std::sync::OnceLock<PublicKey> = std::sync::OnceLock::new();
    let key = KEY
        .get_or_init(|| SigningKey::from_seed("k1", &SEED).public_key())
        .clone();

    if let Ok(parsed) = jws::parse(token) {
        assert_eq!(token.matches('.').count(), 2, "accepted {token:?}");
        let kid = parsed.kid();
        assert!(!kid.is_empty() && kid.len() <= 64, "kid {kid:?}");
        // The signature check itself on arbitrary bytes: a key of the token's kid (any kid).
        let same_kid = PublicKey::from_bytes(kid, &key.to_bytes()).expect("valid key");
        let verified = parsed.verify::<serde_json::Value>(&same_kid);
        if kid == "k1" {
            assert_eq!(parsed.verify::<serde_json::Value>(&key), verified);
        } else {
            // A key is only ever used for tokens that name it.
            assert_eq!(
                parsed.verify::<serde_json::Value>(&key).err(),
                Some(JwsError::BadSignature)
            );
        }
    }

    let keys = [key];
    match tokens::authentic_access_token(token, &keys) {
        Ok(claims) => {
            assert_eq!(claims.iss, tokens::ISSUER);
            assert_eq!(claims.aud, tokens::AUDIENCE);
            assert!(token.len() <= tokens::MAX_TOKEN_BYTES);
            if let Some(expiry_ms) = claims.exp.checked_mul(1000) {
                assert_eq!(
                    tokens::verify_access_token(token, &keys, expiry_ms),
                    Err(AccessTokenError::Expired)
                );
            }
            match tokens::verify_access_token(token, &keys, NOW_MS) {
                Ok(again) => assert_eq!(again, claims),
                Err(error) => assert_eq!(error, AccessTokenError::Expired),
            }
        }
        Err(error) => {
            assert_eq!(error, AccessTokenError::Invalid);
            assert_eq!(
                tokens::verify_access_token(token, &keys, NOW_MS),
                Err(AccessTokenError::Invalid)
            );
        }
    }
});

/// The same bytes as an `Authorization` and an `X-Token` header value.
fn from_headers(data: &[u8]) {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    for name in [
        http::header::AUTHORIZATION,
        http::HeaderName::from_static("x-token"),
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert(name.clone(), value.clone());
        if let Some(token) = crawbl_edge::fuzzing::token_from_headers(&headers) {
            assert_eq!(token, token.trim(), "{name}: untrimmed {token:?}");
            let text = value
                .to_str()
                .expect("a token comes from a visible-ASCII header");
            assert!(text.contains(token), "{name}: {token:?} is not in {text:?}");
            if name == http::header::AUTHORIZATION {
                let (scheme, _) = text.trim().split_once(' ').expect("a scheme and a token");
                assert!(scheme.eq_ignore_ascii_case("bearer"), "scheme {scheme:?}");
            }
        }
    }
}
