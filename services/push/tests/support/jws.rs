//! What the fake providers do with a JWT they receive: split it, decode it, and verify its
//! signature with the sender's public key. ES256 is verified with RustCrypto's `p256` (the
//! senders sign with ring), RS256 with ring's verifier (a public-key operation the signing side
//! does not share).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// A decoded compact JWS whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Value,
    pub claims: Value,
}

/// `token`'s parts: signing input, header, claims, signature.
fn split(token: &str) -> Result<(String, Value, Value, Vec<u8>), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("not three dot-separated parts".into());
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|error| format!("{what} is not unpadded base64url: {error}"))
    };
    let header_json: Value = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|error| format!("header is not JSON: {error}"))?;
    let claims_json: Value = serde_json::from_slice(&decode(claims, "claims")?)
        .map_err(|error| format!("claims are not JSON: {error}"))?;
    Ok((
        format!("{header}.{claims}"),
        header_json,
        claims_json,
        decode(signature, "signature")?,
    ))
}

/// `token` verified as ES256 with the P-256 public key `public_sec1` (uncompressed SEC1).
pub fn verify_es256(token: &str, public_sec1: &[u8]) -> Result<Verified, String> {
    use p256::ecdsa::signature::Verifier as _;
    let (signing_input, header, claims, signature) = split(token)?;
    if header["alg"] != "ES256" {
        return Err(format!("alg is {}, not ES256", header["alg"]));
    }
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_sec1)
        .map_err(|_| "the public key is not a P-256 point".to_owned())?;
    let signature = p256::ecdsa::Signature::from_slice(&signature)
        .map_err(|_| "the signature is not 64 bytes r || s".to_owned())?;
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "the ES256 signature does not verify".to_owned())?;
    Ok(Verified { header, claims })
}

/// `token` verified as RS256 with the RSA public key `public_pkcs1_der`.
pub fn verify_rs256(token: &str, public_pkcs1_der: &[u8]) -> Result<Verified, String> {
    let (signing_input, header, claims, signature) = split(token)?;
    if header["alg"] != "RS256" {
        return Err(format!("alg is {}, not RS256", header["alg"]));
    }
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_pkcs1_der,
    )
    .verify(signing_input.as_bytes(), &signature)
    .map_err(|_| "the RS256 signature does not verify".to_owned())?;
    Ok(Verified { header, claims })
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
