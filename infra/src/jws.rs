//! Compact JSON Web Signatures (the JWT format, RFC 7515) signed with Ed25519 (`"alg": "EdDSA"`,
//! RFC 8037): signing, and verification with the public key named by the token's `kid`.
//!
//! Only the format and the signature live here; what the claims mean (issuer, audience, expiry,
//! session) is up to the caller, which deserializes them into its own type once the signature
//! holds. Nothing else is accepted: no other algorithm, no `crit` header, no padding, no
//! non-canonical base64.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const ALGORITHM: &str = "EdDSA";
/// Longest key id accepted in a header.
const MAX_KID_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the claims are not what was expected")]
    BadClaims,
}

/// A private signing key with its key id.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate(kid: impl Into<String>) -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed[..]);
        Self::from_seed(kid, &seed)
    }

    pub fn from_seed(kid: impl Into<String>, seed: &[u8; 32]) -> Self {
        Self {
            kid: kid.into(),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, to store the key.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `claims` as a compact JWS: `header.payload.signature`, each unpadded base64url.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, serde_json::Error> {
        let header = Header {
            alg: ALGORITHM.to_owned(),
            typ: Some("JWT".to_owned()),
            kid: Some(self.kid.clone()),
            crit: None,
        };
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(token)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SigningKey({}, ***)", self.kid)
    }
}

/// A public key with its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// From the 32 bytes of an Ed25519 public key; fails on bytes that are not a valid point.
    pub fn from_bytes(kid: impl Into<String>, bytes: &[u8]) -> Result<Self, JwsError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| JwsError::Malformed)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| JwsError::Malformed)?;
        Ok(Self {
            kid: kid.into(),
            key,
        })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    /// Extensions the verifier must understand; we understand none, so any is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// A token whose shape and header are valid, before its signature is checked.
#[derive(Debug)]
pub struct Unverified<'a> {
    kid: String,
    signing_input: &'a str,
    payload: &'a str,
    signature: Signature,
}

/// Parses `token`'s structure and header: three unpadded base64url parts, `alg` `EdDSA`, a `kid`.
pub fn parse(token: &str) -> Result<Unverified<'_>, JwsError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwsError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JwsError::Malformed)?;
    if payload.contains('.') {
        return Err(JwsError::Malformed);
    }
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| JwsError::Malformed)?;
    if header.alg != ALGORITHM || header.crit.is_some() {
        return Err(JwsError::UnsupportedAlgorithm);
    }
    let kid = header
        .kid
        .filter(|kid| !kid.is_empty() && kid.len() <= MAX_KID_BYTES)
        .ok_or(JwsError::Malformed)?;
    let signature: [u8; 64] = decode(signature)?
        .try_into()
        .map_err(|_| JwsError::Malformed)?;
    Ok(Unverified {
        kid,
        signing_input,
        payload,
        signature: Signature::from_bytes(&signature),
    })
}

impl Unverified<'_> {
    /// The id of the key the token claims to be signed with.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The claims, once the signature verifies with `key` (whose kid must be the token's).
    pub fn verify<C: DeserializeOwned>(&self, key: &PublicKey) -> Result<C, JwsError> {
        if key.kid != self.kid {
            return Err(JwsError::BadSignature);
        }
        key.key
            .verify_strict(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwsError::BadSignature)?;
        serde_json::from_slice(&decode(self.payload)?).map_err(|_| JwsError::BadClaims)
    }
}

fn decode(part: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn claims() -> Value {
        json!({"sub": "user-1", "exp": 1_900_000_000})
    }

    #[test]
    fn a_signed_token_verifies_with_its_public_key_and_gives_back_the_claims() {
        let key = SigningKey::generate("k1");
        let token = key.sign(&claims()).expect("sign");
        let parsed = parse(&token).expect("parse");
        assert_eq!(parsed.kid(), "k1");
        let verified: Value = parsed.verify(&key.public_key()).expect("verify");
        assert_eq!(verified, claims());
        // Standard JWT layout: three dot-separated parts, a header naming the algorithm.
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("base64");
        let header: Value = serde_json::from_slice(&header).expect("json");
        assert_eq!(header, json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}));
    }

    #[test]
    fn another_key_or_a_changed_payload_or_signature_does_not_verify() {
        let key = SigningKey::generate("k1");
        let impostor = SigningKey::generate("k1");
        let token = key.sign(&claims()).expect("sign");
        let forged = impostor.sign(&json!({"sub": "admin"})).expect("sign");

        let parsed = parse(&forged).expect("parse");
        assert_eq!(
            parsed.verify::<Value>(&key.public_key()),
            Err(JwsError::BadSignature)
        );

        let parts: Vec<&str> = token.split('.').collect();
        let other_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","exp":1900000000}"#);
        let swapped = format!("{}.{other_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            parse(&swapped)
                .expect("parse")
                .verify::<Value>(&key.public_key()),
            Err(JwsError::BadSignature)
        );

        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64");
        signature[10] ^= 1;
        let flipped = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(signature)
        );
        assert_eq!(
            parse(&flipped)
                .expect("parse")
                .verify::<Value>(&key.public_key()),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn a_key_with_another_kid_is_not_used() {
        let key = SigningKey::generate("k1");
        let token = key.sign(&claims()).expect("sign");
        let renamed = SigningKey::from_seed("k2", &key.seed()).public_key();
        assert_eq!(
            parse(&token).expect("parse").verify::<Value>(&renamed),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn other_algorithms_crit_headers_and_malformed_tokens_are_refused() {
        let key = SigningKey::generate("k1");
        let token = key.sign(&claims()).expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        let with_header = |header: Value| {
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                parts[1],
                parts[2]
            )
        };
        for header in [
            json!({"alg": "none", "kid": "k1"}),
            json!({"alg": "HS256", "kid": "k1"}),
            json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp"]}),
        ] {
            assert_eq!(
                parse(&with_header(header.clone())).err(),
                Some(JwsError::UnsupportedAlgorithm),
                "{header}"
            );
        }
        let long_kid = "k".repeat(65);
        for malformed in [
            String::new(),
            "a.b".to_owned(),
            "...".to_owned(),
            format!("{token}.extra"),
            format!("{token}="),
            with_header(json!({"alg": "EdDSA"})),
            with_header(json!({"alg": "EdDSA", "kid": ""})),
            with_header(json!({"alg": "EdDSA", "kid": long_kid})),
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]),
            format!("é{token}"),
        ] {
            assert_eq!(
                parse(&malformed).err(),
                Some(JwsError::Malformed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn public_keys_round_trip_through_their_bytes() {
        let key = SigningKey::generate("k1").public_key();
        let again = PublicKey::from_bytes("k1", &key.to_bytes()).expect("valid key");
        assert_eq!(again, key);
        assert!(PublicKey::from_bytes("k1", &[1, 2, 3]).is_err());
    }
}
