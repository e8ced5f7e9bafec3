//! Password hashing with Argon2id (the crate's default, OWASP-recommended parameters), always on
//! the blocking thread pool: one hash takes tens of milliseconds of CPU and ~19 MiB of memory.

use anyhow::{Context, anyhow};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::domain::Password;

/// A valid Argon2id hash (default parameters) of a password nobody knows. Sign-in verifies against
/// it when the email is unknown, so that case costs as much time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Bq/nTGiVc0AB/Ziix0dG+Q$6gVljVN/RGPK0jSR89wFBY4eTtNoT7igV/mBppKAEGs";

/// The PHC string (algorithm, parameters, salt and hash) to store for `password`.
pub async fn hash(password: Password) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(password.expose()))
        .await
        .context("the password hashing task failed")?
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt[..]);
    let salt =
        SaltString::encode_b64(&salt).map_err(|error| anyhow!("encoding a salt: {error}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow!("hashing a password: {error}"))?;
    Ok(hash.to_string())
}

/// Whether `candidate` matches `stored_hash`. Without a stored hash (unknown user) the work is
/// done against a dummy hash and the answer is always `false`.
pub async fn verify(candidate: String, stored_hash: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || match stored_hash {
        Some(stored_hash) => verify_blocking(&candidate, &stored_hash),
        None => verify_blocking(&candidate, DUMMY_HASH).map(|_| false),
    })
    .await
    .context("the password verification task failed")?
}

fn verify_blocking(candidate: &str, stored_hash: &str) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(stored_hash)
        .map_err(|error| anyhow!("a stored password hash is malformed: {error}"))?;
    match Argon2::default().verify_password(candidate.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(error) => Err(anyhow!("verifying a password: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> Password {
        Password::parse(raw).unwrap_or_else(|error| panic!("{raw:?}: {error}"))
    }

    #[test]
    fn the_dummy_hash_costs_as_much_as_a_real_one() {
        let dummy = PasswordHash::new(DUMMY_HASH).map(|hash| argon2::Params::try_from(&hash));
        let default = argon2::Params::default();
        match dummy {
            Ok(Ok(params)) => {
                assert_eq!(
                    (params.m_cost(), params.t_cost(), params.p_cost()),
                    (default.m_cost(), default.t_cost(), default.p_cost())
                );
            }
            other => panic!("the dummy hash is malformed: {other:?}"),
        }
        assert!(DUMMY_HASH.starts_with("$argon2id$"));
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() -> anyhow::Result<()> {
        let stored = hash(password("correct horse battery staple")).await?;
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery staple".into(), Some(stored.clone())).await?);
        assert!(!verify("correct horse battery stapler".into(), Some(stored)).await?);
        Ok(())
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_verifies() -> anyhow::Result<()> {
        assert!(!verify("anything at all".into(), None).await?);
        Ok(())
    }
}
