//! TLS for outgoing HTTPS (model providers, MCP servers, push providers): rustls on ring, never
//! aws-lc-rs or openssl. Crates that use reqwest build it with `rustls-no-provider`, so it has no
//! crypto of its own; every client gets a rustls configuration built by [`client_config`] and
//! handed over with `reqwest::ClientBuilder::tls_backend_preconfigured`.
//!
//! Trusted roots are the platform's CA certificates (the directories where OpenSSL looks, such as
//! `/etc/ssl/certs`) **plus** the certificates named by `SSL_CERT_FILE` and `SSL_CERT_DIR`, which
//! each component reads once at start ([`extra_roots_from_env`]). Plus, not instead: pointing
//! `SSL_CERT_FILE` at a private CA must not cut a component off from public endpoints such as
//! `https://api.openai.com` or `https://fcm.googleapis.com`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;

/// A rustls client configuration on ring that trusts the platform's roots and `extra_roots`.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let (platform, ignored) = roots.add_parsable_certificates(platform_roots());
    if ignored > 0 {
        tracing::debug!(ignored, "some platform CA certificates cannot be used");
    }
    for certificate in extra_roots {
        roots.add(certificate.clone()).context(
            "adding a certificate of SSL_CERT_FILE or SSL_CERT_DIR to the trusted roots",
        )?;
    }
    if roots.is_empty() {
        tracing::warn!(
            "no CA certificates found (none on the platform, SSL_CERT_FILE and SSL_CERT_DIR \
             unset): every https endpoint will be refused"
        );
    }
    tracing::debug!(
        platform,
        extra = extra_roots.len(),
        "trusted CA certificates"
    );
    let config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls's ring provider. rustls 0.23.48 deprecates it because its key exchange has no
/// post-quantum hybrid (only the aws-lc-rs provider has one); ring is still a supported, safe
/// provider, and this build keeps aws-lc-rs (a C/assembly build with its own toolchain needs) out
/// on purpose. Revisit when ring gains ML-KEM or rustls ships a pure-Rust post-quantum provider.
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of the PEM file `cert_file` and of every file in the directories of
/// `cert_dirs` (`:`-separated, as OpenSSL reads `SSL_CERT_DIR`). An unreadable path or a file
/// without certificates is an error: a CA the operator named must not be dropped silently.
pub fn extra_roots_from_env(
    cert_file: Option<&str>,
    cert_dirs: Option<&str>,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut certificates = Vec::new();
    if let Some(file) = cert_file.filter(|file| !file.trim().is_empty()) {
        let loaded = load(Some(Path::new(file)), None)
            .with_context(|| format!("reading SSL_CERT_FILE={file:?}"))?;
        if loaded.is_empty() {
            bail!("SSL_CERT_FILE={file:?} holds no PEM certificate");
        }
        certificates.extend(loaded);
    }
    for dir in cert_dirs
        .map(|dirs| std::env::split_paths(dirs).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        let loaded = load(None, Some(&dir))
            .with_context(|| format!("reading SSL_CERT_DIR entry {dir:?}"))?;
        certificates.extend(loaded);
    }
    Ok(certificates)
}

fn load(file: Option<&Path>, dir: Option<&Path>) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let result = rustls_native_certs::load_certs_from_paths(file, dir);
    if let Some(error) = result.errors.into_iter().next() {
        return Err(error.into());
    }
    Ok(result.certs)
}

/// The platform's CA certificates, from the directories OpenSSL would search, deliberately
/// without `SSL_CERT_FILE`/`SSL_CERT_DIR` (which `rustls-native-certs` would use *instead*).
fn platform_roots() -> Vec<CertificateDer<'static>> {
    let mut certificates = Vec::new();
    // openssl-probe is a list of well-known paths, pure Rust: it links no OpenSSL.
    for dir in openssl_probe::candidate_cert_dirs() {
        let result = rustls_native_certs::load_certs_from_paths(None, Some(dir));
        for error in &result.errors {
            tracing::debug!(%error, dir = %dir.display(), "skipping an unreadable CA certificate");
        }
        certificates.extend(result.certs);
    }
    certificates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_certificate_file_is_refused_with_its_name() {
        let error = extra_roots_from_env(Some("/nonexistent/ca.pem"), None).expect_err("missing");
        assert!(
            format!("{error:#}").contains("/nonexistent/ca.pem"),
            "{error:#}"
        );

        let dir = std::env::temp_dir().join(format!("crawbl-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = extra_roots_from_env(empty.to_str(), None).expect_err("no certificate");
        assert!(
            format!("{error:#}").contains("no PEM certificate"),
            "{error:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unset_variables_add_nothing_and_a_configuration_still_builds() {
        assert!(extra_roots_from_env(None, None).expect("ok").is_empty());
        assert!(
            extra_roots_from_env(Some(" "), Some(""))
                .expect("ok")
                .is_empty()
        );
        assert!(client_config(&[]).is_ok());
    }
}
