//! The providers' credentials and endpoints, read once at start from the environment (the
//! variables are listed in the crate documentation). A provider whose variables are all unset is
//! off; one with some of them set, or with a file or key that cannot be used, is a startup error
//! that names the variable. Key material never reaches a log: `Debug` shows public parts only.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use crate::keys::{EcSigningKey, RsaSigningKey};
use crate::providers::Platform;

/// FCM's production endpoint.
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";
/// APNs' production endpoint.
pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
/// APNs' development (sandbox) endpoint, for apps signed for development.
pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// Google's OAuth 2.0 token endpoint, when a service account names none.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Every provider's settings; `None` is a provider that is off.
#[derive(Debug, Default)]
pub struct PushConfig {
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
    pub webpush: Option<WebPushConfig>,
    /// CA certificates trusted besides the platform's: `SSL_CERT_FILE` and `SSL_CERT_DIR`.
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
}

impl PushConfig {
    /// The settings from the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(crawbl_infra::config::optional)
    }

    /// The settings from `lookup` (a variable's value, `None` when unset or empty): what
    /// [`Self::from_env`] does, testable without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            fcm: FcmConfig::from_lookup(&lookup)?,
            apns: ApnsConfig::from_lookup(&lookup)?,
            webpush: WebPushConfig::from_lookup(&lookup)?,
            extra_root_certificates: crawbl_infra::tls::extra_roots_from_env(
                lookup("SSL_CERT_FILE").as_deref(),
                lookup("SSL_CERT_DIR").as_deref(),
            )?,
        })
    }
}

/// What turns `platform` on, for the "push is off" line.
pub(crate) fn variables_to_enable(platform: Platform) -> &'static str {
    match platform {
        Platform::Fcm => "FCM_SERVICE_ACCOUNT_FILE",
        Platform::Apns => "APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC",
        Platform::WebPush => "VAPID_PRIVATE_KEY and VAPID_SUBJECT",
    }
}

/// FCM HTTP v1: a service account and the endpoint.
#[derive(Debug)]
pub struct FcmConfig {
    pub service_account: ServiceAccount,
    /// `FCM_ENDPOINT`: the base URL, default [`FCM_ENDPOINT`].
    pub endpoint: Url,
}

impl FcmConfig {
    pub fn new(service_account: ServiceAccount) -> Self {
        Self {
            service_account,
            endpoint: Url::parse(FCM_ENDPOINT).unwrap_or_else(|_| unreachable!("a valid URL")),
        }
    }

    /// The same with another endpoint (a test server).
    pub fn with_endpoint(mut self, endpoint: &str) -> anyhow::Result<Self> {
        self.endpoint = https_url(endpoint)?;
        Ok(self)
    }

    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let Some(file) = lookup("FCM_SERVICE_ACCOUNT_FILE") else {
            if lookup("FCM_ENDPOINT").is_some() {
                bail!("FCM_ENDPOINT is set but FCM_SERVICE_ACCOUNT_FILE is not");
            }
            return Ok(None);
        };
        let service_account = ServiceAccount::from_file(Path::new(&file))
            .with_context(|| format!("FCM_SERVICE_ACCOUNT_FILE={file:?}"))?;
        let config = Self::new(service_account);
        let config = match lookup("FCM_ENDPOINT") {
            Some(endpoint) => config
                .with_endpoint(&endpoint)
                .with_context(|| format!("FCM_ENDPOINT={endpoint:?}"))?,
            None => config,
        };
        Ok(Some(config))
    }
}

/// The fields of a Google service-account JSON key file that FCM needs.
pub struct ServiceAccount {
    pub client_email: String,
    pub project_id: String,
    /// Where the signed assertion is exchanged for an access token.
    pub token_uri: Url,
    /// Sent as the assertion's `kid` when the file has it.
    pub private_key_id: Option<String>,
    pub(crate) private_key: RsaSigningKey,
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    project_id: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let json = std::fs::read_to_string(path).context("reading the service-account file")?;
        Self::from_json(&json)
    }

    /// A service account from the JSON key file Google's console downloads.
    pub fn from_json(json: &str) -> anyhow::Result<Self> {
        let file: ServiceAccountFile = serde_json::from_str(json).map_err(|error| {
            // serde_json's message names the field, never a value.
            anyhow!("not a service-account JSON key file: {error}")
        })?;
        if let Some(kind) = file.kind.as_deref()
            && kind != "service_account"
        {
            bail!("the key file is of type {kind:?}, not \"service_account\"");
        }
        if file.client_email.trim().is_empty() || file.project_id.trim().is_empty() {
            bail!("the key file has an empty client_email or project_id");
        }
        if !file
            .project_id
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-:.".contains(character))
        {
            bail!("project_id {:?} is not a project id", file.project_id);
        }
        let token_uri = https_url(file.token_uri.as_deref().unwrap_or(GOOGLE_TOKEN_URI))
            .context("token_uri")?;
        let private_key = RsaSigningKey::from_pem(&file.private_key).context("private_key")?;
        Ok(Self {
            client_email: file.client_email,
            project_id: file.project_id,
            token_uri,
            private_key_id: file.private_key_id,
            private_key,
        })
    }
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

/// APNs with token-based authentication.
#[derive(Debug)]
pub struct ApnsConfig {
    /// `APNS_KEY_FILE`: the `.p8` signing key (PKCS#8 PEM) from Apple's developer account.
    pub key: EcSigningKey,
    /// `APNS_KEY_ID`: the key's 10-character id.
    pub key_id: String,
    /// `APNS_TEAM_ID`: the developer team's id.
    pub team_id: String,
    /// `APNS_TOPIC`: the app's bundle id.
    pub topic: String,
    /// `APNS_ENDPOINT`: `production` (default), `sandbox`, or a base URL.
    pub endpoint: Url,
}

impl ApnsConfig {
    pub fn new(
        key: EcSigningKey,
        key_id: &str,
        team_id: &str,
        topic: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            key,
            key_id: identifier(key_id).context("the key id")?,
            team_id: identifier(team_id).context("the team id")?,
            topic: topic_name(topic)?,
            endpoint: Url::parse(APNS_PRODUCTION).unwrap_or_else(|_| unreachable!("a valid URL")),
        })
    }

    /// The same with another endpoint: `production`, `sandbox`, or a base URL (a test server).
    pub fn with_endpoint(mut self, endpoint: &str) -> anyhow::Result<Self> {
        self.endpoint = match endpoint {
            "production" => https_url(APNS_PRODUCTION)?,
            "sandbox" => https_url(APNS_SANDBOX)?,
            url => https_url(url)?,
        };
        Ok(self)
    }

    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        const NAMES: [&str; 4] = ["APNS_KEY_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC"];
        let values = NAMES.map(lookup);
        let missing: Vec<&str> = NAMES
            .iter()
            .zip(&values)
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| *name)
            .collect();
        if missing.len() == NAMES.len() {
            if lookup("APNS_ENDPOINT").is_some() {
                bail!(
                    "APNS_ENDPOINT is set but APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC are not"
                );
            }
            return Ok(None);
        }
        if !missing.is_empty() {
            bail!(
                "APNs push needs APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC; {} not set",
                missing.join(", ")
            );
        }
        let [Some(file), Some(key_id), Some(team_id), Some(topic)] = values else {
            unreachable!("every value was checked above");
        };
        let pem = std::fs::read_to_string(&file)
            .with_context(|| format!("APNS_KEY_FILE={file:?}: reading the key file"))?;
        let key =
            EcSigningKey::from_pem(&pem).with_context(|| format!("APNS_KEY_FILE={file:?}"))?;
        let config = Self::new(key, &key_id, &team_id, &topic)
            .context("APNS_KEY_ID, APNS_TEAM_ID or APNS_TOPIC")?;
        let config = match lookup("APNS_ENDPOINT") {
            Some(endpoint) => config
                .with_endpoint(&endpoint)
                .with_context(|| format!("APNS_ENDPOINT={endpoint:?}"))?,
            None => config,
        };
        Ok(Some(config))
    }
}

/// Web Push with VAPID.
#[derive(Debug)]
pub struct WebPushConfig {
    /// `VAPID_PRIVATE_KEY`: the application server's P-256 key.
    pub vapid_key: EcSigningKey,
    /// `VAPID_SUBJECT`: a `mailto:` or `https:` contact for the push services' operators.
    pub subject: String,
}

impl WebPushConfig {
    pub fn new(vapid_key: EcSigningKey, subject: &str) -> anyhow::Result<Self> {
        let subject = subject.trim();
        let contact = subject
            .strip_prefix("mailto:")
            .or_else(|| subject.strip_prefix("https://"));
        match contact {
            Some(rest)
                if !rest.is_empty()
                    && subject.len() <= 256
                    && !subject.chars().any(|c| c.is_whitespace() || c.is_control()) => {}
            _ => bail!(
                "the VAPID subject must be a mailto: or https: URL, such as mailto:ops@example.com"
            ),
        }
        Ok(Self {
            vapid_key,
            subject: subject.to_owned(),
        })
    }

    /// A VAPID key as `VAPID_PRIVATE_KEY` holds it: PEM (PKCS#8 or SEC1), or the 32-byte private
    /// scalar in base64url (what `npx web-push generate-vapid-keys` prints as the private key).
    pub fn parse_key(text: &str) -> anyhow::Result<EcSigningKey> {
        if text.contains("-----BEGIN") {
            EcSigningKey::from_pem(text)
        } else {
            EcSigningKey::from_base64url_scalar(text)
        }
    }

    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        match (lookup("VAPID_PRIVATE_KEY"), lookup("VAPID_SUBJECT")) {
            (None, None) => Ok(None),
            (Some(_), None) => bail!("VAPID_PRIVATE_KEY is set but VAPID_SUBJECT is not"),
            (None, Some(_)) => bail!("VAPID_SUBJECT is set but VAPID_PRIVATE_KEY is not"),
            (Some(key), Some(subject)) => {
                // Never the key's text in an error.
                let key = Self::parse_key(&key).context("VAPID_PRIVATE_KEY")?;
                Ok(Some(
                    Self::new(key, &subject)
                        .with_context(|| format!("VAPID_SUBJECT={subject:?}"))?,
                ))
            }
        }
    }
}

/// An `https://` URL with a host (every provider's endpoint is one).
fn https_url(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text.trim()).map_err(|error| anyhow!("not a URL: {error}"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        bail!("not an https:// URL");
    }
    Ok(url)
}

/// A key or team id: ASCII letters and digits.
fn identifier(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("must be letters and digits (Apple's ids are 10 characters)");
    }
    Ok(text.to_owned())
}

/// A bundle id, as `apns-topic` carries it.
fn topic_name(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 255 || !text.chars().all(|c| c.is_ascii_graphic()) {
        bail!("the topic must be the app's bundle id, such as com.example.app");
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn config(variables: &[(&str, &str)]) -> anyhow::Result<PushConfig> {
        let variables: HashMap<String, String> = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        PushConfig::from_lookup(|name| variables.get(name).cloned())
    }

    fn error_of(variables: &[(&str, &str)]) -> String {
        format!("{:#}", config(variables).expect_err("a startup error"))
    }

    #[test]
    fn no_credentials_turn_every_provider_off() {
        let config = config(&[]).expect("config");
        assert!(config.fcm.is_none() && config.apns.is_none() && config.webpush.is_none());
    }

    #[test]
    fn partial_credentials_are_errors_that_name_the_missing_variable() {
        let error = error_of(&[("APNS_KEY_ID", "ABC123DEFG"), ("APNS_TOPIC", "com.example")]);
        assert!(
            error.contains("APNS_KEY_FILE, APNS_TEAM_ID not set"),
            "{error}"
        );
        let error = error_of(&[("APNS_ENDPOINT", "sandbox")]);
        assert!(error.contains("APNS_KEY_FILE"), "{error}");
        let error = error_of(&[("FCM_ENDPOINT", "https://fcm.example")]);
        assert!(error.contains("FCM_SERVICE_ACCOUNT_FILE is not"), "{error}");
        let error = error_of(&[("VAPID_SUBJECT", "mailto:ops@example.com")]);
        assert!(error.contains("VAPID_PRIVATE_KEY is not"), "{error}");
        let key = URL_SAFE_NO_PAD.encode([7; 32]);
        let error = error_of(&[("VAPID_PRIVATE_KEY", &key)]);
        assert!(error.contains("VAPID_SUBJECT is not"), "{error}");
    }

    #[test]
    fn broken_credentials_are_errors_that_name_the_variable_and_hide_the_key() {
        let error = error_of(&[
            ("VAPID_PRIVATE_KEY", "c2VjcmV0LWJ1dC13cm9uZy1sZW5ndGg"),
            ("VAPID_SUBJECT", "mailto:ops@example.com"),
        ]);
        assert!(error.contains("VAPID_PRIVATE_KEY"), "{error}");
        assert!(!error.contains("c2VjcmV0"), "the key leaked: {error}");

        let key = URL_SAFE_NO_PAD.encode([7; 32]);
        let error = error_of(&[
            ("VAPID_PRIVATE_KEY", &key),
            ("VAPID_SUBJECT", "ops@example.com"),
        ]);
        assert!(error.contains("VAPID_SUBJECT"), "{error}");

        let error = error_of(&[("FCM_SERVICE_ACCOUNT_FILE", "/nonexistent/sa.json")]);
        assert!(
            error.contains("FCM_SERVICE_ACCOUNT_FILE=\"/nonexistent/sa.json\""),
            "{error}"
        );

        let error = error_of(&[
            ("APNS_KEY_FILE", "/nonexistent/key.p8"),
            ("APNS_KEY_ID", "ABC123DEFG"),
            ("APNS_TEAM_ID", "TEAM123456"),
            ("APNS_TOPIC", "com.example.app"),
        ]);
        assert!(
            error.contains("APNS_KEY_FILE=\"/nonexistent/key.p8\""),
            "{error}"
        );
    }

    #[test]
    fn a_vapid_key_and_subject_turn_web_push_on() {
        let key = URL_SAFE_NO_PAD.encode([7; 32]);
        let config = config(&[
            ("VAPID_PRIVATE_KEY", &key),
            ("VAPID_SUBJECT", "https://crawbl.example/contact"),
        ])
        .expect("config");
        let webpush = config.webpush.expect("web push on");
        assert_eq!(webpush.subject, "https://crawbl.example/contact");
        assert_eq!(webpush.vapid_key.public_key()[0], 4);
    }

    #[test]
    fn a_service_account_needs_its_fields_and_an_rsa_key() {
        assert!(ServiceAccount::from_json("{}").is_err());
        assert!(ServiceAccount::from_json("not json").is_err());
        let error = ServiceAccount::from_json(
            r#"{"type":"service_account","client_email":"a@b","project_id":"p","private_key":"nope"}"#,
        )
        .expect_err("bad key");
        assert!(format!("{error:#}").contains("private_key"), "{error:#}");
        let error = ServiceAccount::from_json(
            r#"{"type":"authorized_user","client_email":"a@b","project_id":"p","private_key":"x"}"#,
        )
        .expect_err("wrong type");
        assert!(
            format!("{error:#}").contains("authorized_user"),
            "{error:#}"
        );
    }
}
