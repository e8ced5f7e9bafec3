//! Access tokens as auth issues them (`issue_access_token`, any key id, user, session, time and
//! lifetime) are read back by the verifiers to the same claims: decode(encode(x)) == x.
//!
//! Properties: a token with a key id of 1..=64 bytes that is at most `MAX_TOKEN_BYTES` long
//! verifies with its key to exactly the claims it was issued with, and is valid until `exp`
//! (expired from then on); any other key id or a longer token is refused, never a panic.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use crawbl_auth::tokens::{self, AccessClaims, AccessTokenError};
use crawbl_infra::jws::{self, JwsError, SigningKey};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    seed: [u8; 32],
    kid: String,
    user_id: String,
    session_id: String,
    now_ms: i64,
    ttl_secs: u64,
}

fuzz_target!(|input: Input| {
    let key = SigningKey::from_seed(input.kid.clone(), &input.seed);
    let issued = tokens::issue_access_token(
        &key,
        &input.user_id,
        &input.session_id,
        input.now_ms,
        Duration::from_secs(input.ttl_secs),
    )
    .expect("claims always serialize");
    let token = issued.token;
    let iat = input.now_ms.div_euclid(1000);
    let expected = AccessClaims {
        iss: tokens::ISSUER.to_owned(),
        aud: tokens::AUDIENCE.to_owned(),
        sub: input.user_id.clone(),
        sid: input.session_id.clone(),
        iat,
        exp: iat.saturating_add(issued.expires_in),
    };
    let keys = [key.public_key()];

    let kid_ok = !input.kid.is_empty() && input.kid.len() <= 64;
    match jws::parse(&token) {
        Ok(parsed) => {
            assert!(kid_ok, "accepted kid {:?}", input.kid);
            assert_eq!(parsed.kid(), input.kid);
            let claims: AccessClaims = parsed.verify(&keys[0]).expect("own signature verifies");
            assert_eq!(claims, expected);
        }
        Err(error) => {
            assert!(!kid_ok, "refused kid {:?}: {error}", input.kid);
            assert_eq!(error, JwsError::Malformed);
        }
    }

    let authentic = tokens::authentic_access_token(&token, &keys);
    if !kid_ok || token.len() > tokens::MAX_TOKEN_BYTES {
        assert_eq!(authentic, Err(AccessTokenError::Invalid));
        return;
    }
    assert_eq!(authentic.as_ref(), Ok(&expected));

    // Valid before `exp`, expired from `exp` on.
    let now = tokens::verify_access_token(&token, &keys, input.now_ms);
    if expected.exp > iat {
        assert_eq!(now, Ok(expected.clone()));
    } else {
        assert_eq!(now, Err(AccessTokenError::Expired));
    }
    if let Some(expiry_ms) = expected.exp.checked_mul(1000) {
        assert_eq!(
            tokens::verify_access_token(&token, &keys, expiry_ms),
            Err(AccessTokenError::Expired)
        );
        if expected.exp > iat {
            assert_eq!(
                tokens::verify_access_token(&token, &keys, expiry_ms - 1),
                Ok(expected.clone())
            );
        }
    }

    // Another key with the same id does not verify it.
    let mut other_seed = input.seed;
    other_seed[0] ^= 1;
    let impostor = [SigningKey::from_seed(input.kid.clone(), &other_seed).public_key()];
    assert_eq!(
        tokens::authentic_access_token(&token, &impostor),
        Err(AccessTokenError::Invalid)
    );
});
