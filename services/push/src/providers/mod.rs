//! One sender per push provider, each speaking that provider's own protocol, behind one
//! interface: a [`Notification`] goes to a [`Target`] and comes back as an [`Outcome`] that tells
//! the delivery pipeline what to do next (nothing, remove the device, retry later, or give up).
//!
//! A sender never returns an error: whatever happened (a network failure, a provider's refusal,
//! our own credentials refused) is an [`Outcome`], logged here once with the provider's reason.

pub mod apns;
pub mod fcm;
pub mod webpush;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PushConfig;
use crate::http;
use crate::validate::InvalidTarget;

pub use apns::ApnsSender;
pub use fcm::FcmSender;
pub use webpush::WebPushSender;

/// A push platform, as a device registration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Firebase Cloud Messaging (Android, and iOS or web apps that use Firebase).
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// Web Push (RFC 8030) to a browser's push service.
    #[serde(rename = "webpush")]
    WebPush,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Fcm, Platform::Apns, Platform::WebPush];

    /// `fcm`, `apns` or `webpush`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
            Platform::WebPush => "webpush",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = InvalidTarget;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fcm" => Ok(Platform::Fcm),
            "apns" => Ok(Platform::Apns),
            "webpush" => Ok(Platform::WebPush),
            _ => Err(InvalidTarget::UnknownPlatform),
        }
    }
}

/// How urgent a notification is. Web Push sends it as `Urgency`, FCM as the Android priority;
/// APNs alerts always go with priority 10.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// The providers' default.
    #[default]
    Normal,
    /// Wake the device now (Web Push `Urgency: high`, FCM Android priority `HIGH`).
    High,
}

/// What a device shows. Payloads are bounded by the providers (4 KiB each); a body that does not
/// fit is shortened (ending with `…`) by the sender rather than refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// Handed to the app with the notification (FCM `data`, top-level keys of the APNs payload
    /// beside `aps`, `data` of the Web Push payload).
    pub data: BTreeMap<String, String>,
    /// Notifications with the same key replace each other on the device (FCM Android
    /// `collapse_key`, `apns-collapse-id`, Web Push `Topic`).
    pub collapse_key: Option<String>,
    /// How long the provider keeps the notification for a device that is offline. `None`: the
    /// provider's default for FCM and APNs, [`webpush::DEFAULT_TTL`] for Web Push (which needs
    /// one).
    pub ttl: Option<Duration>,
    pub urgency: Urgency,
}

impl Notification {
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            body: body.into(),
            ..Self::default()
        }
    }

    /// This notification with `key` = `value` in its data.
    pub fn with_data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// A copy whose payload, as `size` measures it, fits in `max` bytes, by shortening the body;
    /// `None` when even an empty body does not fit (the title or the data are too large).
    pub(crate) fn fitted(&self, max: usize, size: impl Fn(&Notification) -> usize) -> Option<Self> {
        let mut fitted = self.clone();
        // Each round cuts at least the overflow (JSON escaping only makes a character longer),
        // so this ends after a few rounds.
        for _ in 0..8 {
            let length = size(&fitted);
            if length <= max {
                return Some(fitted);
            }
            if fitted.body.is_empty() {
                return None;
            }
            let overflow = length - max;
            let keep = fitted.body.len().saturating_sub(overflow + "…".len());
            let mut end = keep;
            while !fitted.body.is_char_boundary(end) {
                end -= 1;
            }
            fitted.body.truncate(end);
            if !fitted.body.is_empty() {
                fitted.body.push('…');
            }
        }
        (size(&fitted) <= max).then_some(fitted)
    }
}

/// A Web Push subscription, as the browser's `PushSubscription.toJSON()` gives it (other fields,
/// such as `expirationTime`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The push service's URL for this subscription.
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

/// The user agent's keys of a subscription, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionKeys {
    /// The user agent's P-256 public key, uncompressed (65 bytes).
    pub p256dh: String,
    /// The authentication secret (16 bytes).
    pub auth: String,
}

/// Where a notification goes: one registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum Target {
    Fcm {
        token: String,
    },
    /// `token`: the device token in hex.
    Apns {
        token: String,
    },
    #[serde(rename = "webpush")]
    WebPush {
        subscription: Subscription,
    },
}

impl Target {
    pub fn platform(&self) -> Platform {
        match self {
            Target::Fcm { .. } => Platform::Fcm,
            Target::Apns { .. } => Platform::Apns,
            Target::WebPush { .. } => Platform::WebPush,
        }
    }
}

/// What became of one notification to one device, and so what the pipeline does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it.
    Sent,
    /// The provider says this device is gone or the token is not valid: remove the device.
    InvalidToken,
    /// Not now (429, 5xx, a network failure, a timeout): try again, not before `after` when the
    /// provider said so (`Retry-After`).
    Retry { after: Option<Duration> },
    /// Refused for good (the payload, our credentials, a disabled provider): do not retry, keep
    /// the device. The reason is for logs.
    Rejected(String),
}

/// The senders of the providers that are configured; the others are off.
#[derive(Debug)]
pub struct Providers {
    fcm: Option<FcmSender>,
    apns: Option<ApnsSender>,
    webpush: Option<WebPushSender>,
}

impl Providers {
    /// The senders `config` has credentials for, sharing one TLS configuration. Says once, at
    /// `info`, which providers are off and which variable turns each on.
    pub fn new(config: PushConfig) -> anyhow::Result<Self> {
        let tls = crawbl_infra::tls::client_config(&config.extra_root_certificates)?;
        let fcm = config
            .fcm
            .map(|fcm| FcmSender::new(fcm, &tls))
            .transpose()?;
        let apns = config
            .apns
            .map(|apns| ApnsSender::new(apns, &tls))
            .transpose()?;
        let webpush = config
            .webpush
            .map(|webpush| WebPushSender::new(webpush, &tls))
            .transpose()?;
        let providers = Self { fcm, apns, webpush };
        for platform in Platform::ALL {
            if !providers.is_enabled(platform) {
                tracing::info!(
                    "{platform} push is off: set {}",
                    crate::config::variables_to_enable(platform)
                );
            }
        }
        Ok(providers)
    }

    /// Whether notifications to `platform` can be sent.
    pub fn is_enabled(&self, platform: Platform) -> bool {
        match platform {
            Platform::Fcm => self.fcm.is_some(),
            Platform::Apns => self.apns.is_some(),
            Platform::WebPush => self.webpush.is_some(),
        }
    }

    /// Whether any provider is on (without one, nothing can be pushed).
    pub fn any_enabled(&self) -> bool {
        self.fcm.is_some() || self.apns.is_some() || self.webpush.is_some()
    }

    /// The VAPID public key (unpadded base64url) that browsers subscribe with
    /// (`applicationServerKey`), when Web Push is on.
    pub fn vapid_public_key(&self) -> Option<String> {
        self.webpush.as_ref().map(WebPushSender::public_key)
    }

    /// Sends `notification` to `target` with its platform's provider. A platform that is off
    /// gives [`Outcome::Rejected`].
    pub async fn send(&self, target: &Target, notification: &Notification) -> Outcome {
        match target {
            Target::Fcm { token } => match &self.fcm {
                Some(fcm) => fcm.send(token, notification).await,
                None => off(Platform::Fcm),
            },
            Target::Apns { token } => match &self.apns {
                Some(apns) => apns.send(token, notification).await,
                None => off(Platform::Apns),
            },
            Target::WebPush { subscription } => match &self.webpush {
                Some(webpush) => webpush.send(subscription, notification).await,
                None => off(Platform::WebPush),
            },
        }
    }

    pub fn fcm(&self) -> Option<&FcmSender> {
        self.fcm.as_ref()
    }

    pub fn apns(&self) -> Option<&ApnsSender> {
        self.apns.as_ref()
    }

    pub fn webpush(&self) -> Option<&WebPushSender> {
        self.webpush.as_ref()
    }
}

fn off(platform: Platform) -> Outcome {
    Outcome::Rejected(format!("{platform} push is off"))
}

/// The outcome of a response whose status the provider documents no special meaning for: a
/// server error or 429 is retried, anything else refused for good.
pub(crate) fn by_status(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    reason: String,
) -> Outcome {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        http::retry(headers)
    } else {
        Outcome::Rejected(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_and_print_as_registrations_name_them() {
        for platform in Platform::ALL {
            assert_eq!(platform.as_str().parse::<Platform>(), Ok(platform));
            assert_eq!(
                serde_json::to_value(platform).expect("json"),
                serde_json::json!(platform.as_str())
            );
        }
        assert_eq!(
            "FCM".parse::<Platform>(),
            Err(InvalidTarget::UnknownPlatform)
        );
    }

    #[test]
    fn a_long_body_is_shortened_to_fit_and_a_huge_title_does_not_fit() {
        let notification = Notification::new("title", "é".repeat(3000));
        let size = |n: &Notification| serde_json::to_vec(n).map_or(usize::MAX, |json| json.len());
        let fitted = notification.fitted(1000, size).expect("fits");
        assert!(size(&fitted) <= 1000);
        assert!(fitted.body.ends_with('…'));
        assert!(fitted.body.len() > 800, "{}", fitted.body.len());

        let escaped = Notification::new("t", "\u{1}".repeat(2000));
        assert!(size(&escaped.fitted(500, size).expect("fits")) <= 500);

        let small = Notification::new("title", "body");
        assert_eq!(small.fitted(1000, size), Some(small.clone()));
        assert_eq!(
            Notification::new("x".repeat(2000), "body").fitted(1000, size),
            None
        );
    }
}
