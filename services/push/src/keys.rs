//! The private keys of the providers' credentials, read once at start: the RSA key of an FCM
//! service account (RS256) and the P-256 keys of APNs and VAPID (ES256).
//!
//! ring signs (it is already in every build through rustls, and its RSA and ECDSA are constant
//! time). ring can load a P-256 key only from a PKCS#8 document that carries the public key too;
//! Apple's `.p8` files do, but a SEC1 PEM or the bare 32-byte scalar that `web-push
//! generate-vapid-keys` prints does not. `p256` reads every form and derives the public key, and
//! ring gets both halves. Nothing here ever prints key material: `Debug` shows public keys only.

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

/// Length of an uncompressed SEC1 P-256 point: `0x04 || x || y`.
pub const P256_PUBLIC_KEY_LEN: usize = 65;

/// A P-256 private key that makes ES256 signatures (APNs provider tokens, VAPID).
pub struct EcSigningKey {
    pair: EcdsaKeyPair,
    public: [u8; P256_PUBLIC_KEY_LEN],
    rng: SystemRandom,
}

impl EcSigningKey {
    /// A key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, Apple's `.p8`) or SEC1 (`BEGIN EC PRIVATE
    /// KEY`, what `openssl ecparam -genkey` writes).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|error| anyhow!("not a PEM private key ({error})"))?;
        let secret = match &der {
            PrivateKeyDer::Pkcs8(key) => p256::SecretKey::from_der(key.secret_pkcs8_der())
                .map_err(|error| {
                    anyhow!("not a PKCS#8 P-256 private key ({error}); is it an EC key?")
                })?,
            PrivateKeyDer::Sec1(key) => p256::SecretKey::from_der(key.secret_sec1_der())
                .map_err(|error| anyhow!("not a SEC1 P-256 private key ({error})"))?,
            _ => bail!("not a P-256 private key (an RSA key?)"),
        };
        Self::from_secret(&secret)
    }

    /// A key from its 32-byte private scalar.
    pub fn from_scalar(scalar: &[u8]) -> anyhow::Result<Self> {
        if scalar.len() != 32 {
            bail!(
                "a P-256 private key is 32 bytes, this one is {}",
                scalar.len()
            );
        }
        let secret = p256::SecretKey::from_slice(scalar).map_err(|_| {
            anyhow!("not a valid P-256 private scalar (zero or not below the order)")
        })?;
        Self::from_secret(&secret)
    }

    /// A key from its private scalar in base64url (padded or not), the form `web-push
    /// generate-vapid-keys` prints.
    pub fn from_base64url_scalar(text: &str) -> anyhow::Result<Self> {
        let bytes = decode_base64url(text.trim())
            .context("not base64url (the 32-byte private key, as web-push prints it)")?;
        Self::from_scalar(&bytes)
    }

    fn from_secret(secret: &p256::SecretKey) -> anyhow::Result<Self> {
        let public = secret.public_key().to_sec1_bytes();
        let public: [u8; P256_PUBLIC_KEY_LEN] = public
            .as_ref()
            .try_into()
            .map_err(|_| anyhow!("unexpected public key encoding"))?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            secret.to_bytes().as_ref(),
            &public,
            &rng,
        )
        .map_err(|error| anyhow!("the P-256 key was refused ({error})"))?;
        debug_assert_eq!(pair.public_key().as_ref(), public.as_slice());
        Ok(Self { pair, public, rng })
    }

    /// The public key, uncompressed SEC1 (65 bytes).
    pub fn public_key(&self) -> &[u8; P256_PUBLIC_KEY_LEN] {
        &self.public
    }

    /// The public key as unpadded base64url: VAPID's `k=` and a browser's
    /// `applicationServerKey`.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public)
    }

    /// An ES256 signature of `message`: `r || s`, 64 bytes, as JWS wants it.
    pub(crate) fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let signature = self
            .pair
            .sign(&self.rng, message)
            .map_err(|_| anyhow!("ES256 signing failed"))?;
        Ok(signature.as_ref().to_vec())
    }
}

impl std::fmt::Debug for EcSigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EcSigningKey")
            .field("public_key", &self.public_key_base64url())
            .finish_non_exhaustive()
    }
}

/// An RSA private key that makes RS256 signatures (an FCM service account's).
pub struct RsaSigningKey {
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl RsaSigningKey {
    /// A key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what Google's service-account files hold) or
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|error| anyhow!("not a PEM private key ({error})"))?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
            _ => bail!("not an RSA private key (an EC key?)"),
        }
        .map_err(|error| anyhow!("the RSA private key was refused ({error})"))?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// The public key, DER `RSAPublicKey` (PKCS#1).
    pub fn public_key_der(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// An RS256 signature (RSASSA-PKCS1-v1_5 with SHA-256) of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| anyhow!("RS256 signing failed"))?;
        Ok(signature)
    }
}

impl std::fmt::Debug for RsaSigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RsaSigningKey")
            .field("bits", &(self.pair.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

/// Unpadded or padded base64url; what browsers and `web-push` print.
pub(crate) fn decode_base64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKCS#8 P-256 key as ring writes it (with the public key, like Apple's `.p8`).
    fn pkcs8_pem() -> (String, Vec<u8>) {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            document.as_ref(),
            &SystemRandom::new(),
        )
        .expect("parse");
        let pem = rustls::pki_types::PrivatePkcs8KeyDer::from(document.as_ref().to_vec());
        let body = base64::engine::general_purpose::STANDARD.encode(pem.secret_pkcs8_der());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("ascii"))
            .collect();
        (
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
            pair.public_key().as_ref().to_vec(),
        )
    }

    #[test]
    fn a_pkcs8_key_loads_with_the_same_public_key() {
        let (pem, public) = pkcs8_pem();
        let key = EcSigningKey::from_pem(&pem).expect("key");
        assert_eq!(key.public_key().as_slice(), public.as_slice());
        assert_eq!(key.sign(b"message").expect("sign").len(), 64);
    }

    #[test]
    fn a_raw_scalar_gives_the_public_key_its_pem_gives() {
        let secret = p256::SecretKey::from_slice(&[7; 32]).expect("scalar");
        let from_scalar = EcSigningKey::from_base64url_scalar(&URL_SAFE_NO_PAD.encode([7; 32]))
            .expect("scalar key");
        assert_eq!(
            from_scalar.public_key().as_slice(),
            secret.public_key().to_sec1_bytes().as_ref()
        );
    }

    #[test]
    fn bad_keys_are_refused_without_panicking() {
        for bad in [
            "",
            "x",
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(EcSigningKey::from_pem(bad).is_err(), "{bad:?}");
            assert!(RsaSigningKey::from_pem(bad).is_err(), "{bad:?}");
        }
        assert!(EcSigningKey::from_scalar(&[0; 32]).is_err(), "zero scalar");
        assert!(
            EcSigningKey::from_scalar(&[0xff; 32]).is_err(),
            "above the order"
        );
        assert!(EcSigningKey::from_scalar(&[1; 31]).is_err(), "short");
        assert!(EcSigningKey::from_base64url_scalar("not base64!").is_err());
        // An EC key is not an RSA key, and the other way round.
        let (pem, _) = pkcs8_pem();
        assert!(RsaSigningKey::from_pem(&pem).is_err());
    }
}
