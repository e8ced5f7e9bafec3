//! Checks of a device registration before it is stored, so that a bad token is refused with a
//! 400/422 at `POST /devices` rather than discovered at the first push. What passes comes back as
//! a normalized [`Target`] (APNs tokens in lowercase hex, subscription keys in unpadded
//! base64url).
//!
//! The input is hostile: any size, any bytes. Nothing here panics, allocates in proportion to
//! an oversized input, or echoes the input in an error message.
//!
//! A Web Push endpoint is a URL the server will POST to, so it is held to what push services
//! use: `https://` with a host name. IP literals and `localhost` are refused (the server must
//! not be pointed at its own network), except loopback when
//! [`ValidationOptions::allow_loopback_http`] is set for tests.

use std::net::IpAddr;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::keys::{P256_PUBLIC_KEY_LEN, decode_base64url};
use crate::providers::{Platform, Subscription, SubscriptionKeys, Target};

/// The longest FCM registration token accepted (FCM's are about 160 characters today).
pub const MAX_FCM_TOKEN_BYTES: usize = 4096;
/// APNs device tokens are 32 bytes today; Apple says they may grow, so up to 100 bytes.
pub const APNS_TOKEN_HEX_LEN: std::ops::RangeInclusive<usize> = 64..=200;
/// The longest Web Push endpoint accepted.
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// The length of a subscription's authentication secret.
pub const AUTH_SECRET_LEN: usize = 16;

/// Why a registration is refused; [`InvalidTarget::code`] is the API's stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    #[error("platform must be one of fcm, apns, webpush")]
    UnknownPlatform,
    #[error("invalid device token: {0}")]
    DeviceToken(&'static str),
    #[error("invalid subscription: {0}")]
    Subscription(&'static str),
}

impl InvalidTarget {
    /// `UNKNOWN_PLATFORM`, `INVALID_DEVICE_TOKEN` or `INVALID_SUBSCRIPTION`.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidTarget::UnknownPlatform => "UNKNOWN_PLATFORM",
            InvalidTarget::DeviceToken(_) => "INVALID_DEVICE_TOKEN",
            InvalidTarget::Subscription(_) => "INVALID_SUBSCRIPTION",
        }
    }
}

/// What a registration carries besides its platform: a token (FCM, APNs) or a subscription
/// object (Web Push). Deserializes from either a JSON string or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetInput {
    Token(String),
    Subscription(Subscription),
}

/// Relaxations for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidationOptions {
    /// Accept Web Push endpoints on `127.0.0.1`, `[::1]` or `localhost`, over `http://` or
    /// `https://` (a test's fake push service). Never in production.
    pub allow_loopback_http: bool,
}

/// `input` checked against `platform`'s rules, as a [`Target`] to store and send to.
pub fn validate_target(
    platform: &str,
    input: &TargetInput,
    options: ValidationOptions,
) -> Result<Target, InvalidTarget> {
    match (platform.parse::<Platform>()?, input) {
        (Platform::Fcm, TargetInput::Token(token)) => Ok(Target::Fcm {
            token: fcm_token(token)?,
        }),
        (Platform::Apns, TargetInput::Token(token)) => Ok(Target::Apns {
            token: apns_token(token)?,
        }),
        (Platform::WebPush, TargetInput::Subscription(subscription)) => Ok(Target::WebPush {
            subscription: subscription_of(subscription, options)?,
        }),
        (Platform::Fcm | Platform::Apns, TargetInput::Subscription(_)) => Err(
            InvalidTarget::DeviceToken("fcm and apns take a token string, not a subscription"),
        ),
        (Platform::WebPush, TargetInput::Token(_)) => Err(InvalidTarget::Subscription(
            "webpush takes a subscription object {endpoint, keys: {p256dh, auth}}",
        )),
    }
}

/// An FCM registration token: 1 to 4096 bytes of printable ASCII, no whitespace.
pub fn fcm_token(token: &str) -> Result<String, InvalidTarget> {
    if token.is_empty() {
        return Err(InvalidTarget::DeviceToken("the token is empty"));
    }
    if token.len() > MAX_FCM_TOKEN_BYTES {
        return Err(InvalidTarget::DeviceToken(
            "the token is longer than 4096 bytes",
        ));
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(InvalidTarget::DeviceToken(
            "the token has whitespace, control or non-ASCII characters",
        ));
    }
    Ok(token.to_owned())
}

/// An APNs device token: 64 to 200 hex digits (an even count), returned in lowercase.
pub fn apns_token(token: &str) -> Result<String, InvalidTarget> {
    if !APNS_TOKEN_HEX_LEN.contains(&token.len()) {
        return Err(InvalidTarget::DeviceToken(
            "an APNs device token is 64 to 200 hex digits",
        ));
    }
    if !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(InvalidTarget::DeviceToken(
            "an APNs device token is hex digits only",
        ));
    }
    if !token.len().is_multiple_of(2) {
        return Err(InvalidTarget::DeviceToken(
            "an APNs device token has an even number of hex digits",
        ));
    }
    Ok(token.to_ascii_lowercase())
}

/// A Web Push subscription: its endpoint and keys checked, the keys re-encoded canonically.
pub fn subscription_of(
    subscription: &Subscription,
    options: ValidationOptions,
) -> Result<Subscription, InvalidTarget> {
    let endpoint = endpoint(&subscription.endpoint, options)?;
    let p256dh = decode_key(&subscription.keys.p256dh, P256_PUBLIC_KEY_LEN).ok_or(
        InvalidTarget::Subscription("keys.p256dh is not a 65-byte base64url P-256 public key"),
    )?;
    if p256::PublicKey::from_sec1_bytes(&p256dh).is_err() || p256dh[0] != 0x04 {
        return Err(InvalidTarget::Subscription(
            "keys.p256dh is not an uncompressed point on P-256",
        ));
    }
    let auth = decode_key(&subscription.keys.auth, AUTH_SECRET_LEN).ok_or(
        InvalidTarget::Subscription("keys.auth is not a 16-byte base64url secret"),
    )?;
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(Subscription {
        endpoint,
        keys: SubscriptionKeys {
            p256dh: encode(&p256dh),
            auth: encode(&auth),
        },
    })
}

/// `text` decoded from base64url when it is exactly `length` bytes; the length is checked before
/// decoding, so a huge input costs nothing.
fn decode_key(text: &str, length: usize) -> Option<Vec<u8>> {
    let unpadded = text.trim_end_matches('=');
    if unpadded.len() != length.div_ceil(3) * 4 - (3 - length % 3) % 3 {
        return None;
    }
    decode_base64url(unpadded)
        .ok()
        .filter(|bytes| bytes.len() == length)
}

fn endpoint(text: &str, options: ValidationOptions) -> Result<String, InvalidTarget> {
    if text.len() > MAX_ENDPOINT_BYTES {
        return Err(InvalidTarget::Subscription(
            "the endpoint is longer than 2048 bytes",
        ));
    }
    let url =
        Url::parse(text).map_err(|_| InvalidTarget::Subscription("the endpoint is not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidTarget::Subscription(
            "the endpoint must not carry credentials",
        ));
    }
    if url.fragment().is_some() {
        return Err(InvalidTarget::Subscription(
            "the endpoint must not have a fragment",
        ));
    }
    let Some(host) = url.host_str() else {
        return Err(InvalidTarget::Subscription("the endpoint has no host"));
    };
    // An IPv6 literal comes bracketed.
    let loopback = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(address) if address.is_loopback() => true,
        Ok(_) => return Err(ip_literal()),
        Err(_) => {
            let domain = host.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
    };
    if loopback {
        if !options.allow_loopback_http {
            return Err(InvalidTarget::Subscription(
                "the endpoint must be a push service's https:// URL, not this machine",
            ));
        }
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(InvalidTarget::Subscription(
                "the endpoint must be an http(s):// URL",
            ));
        }
    } else if url.scheme() != "https" {
        return Err(InvalidTarget::Subscription(
            "the endpoint must be an https:// URL",
        ));
    }
    Ok(url.into())
}

fn ip_literal() -> InvalidTarget {
    InvalidTarget::Subscription("the endpoint must name a push service's host, not an IP address")
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    const STRICT: ValidationOptions = ValidationOptions {
        allow_loopback_http: false,
    };
    const TESTS: ValidationOptions = ValidationOptions {
        allow_loopback_http: true,
    };

    fn token(platform: &str, token: &str) -> Result<Target, InvalidTarget> {
        validate_target(platform, &TargetInput::Token(token.to_owned()), STRICT)
    }

    /// A valid user-agent public key (the generator of P-256 times 7).
    fn p256dh() -> String {
        let secret = p256::SecretKey::from_slice(&[7; 32]).expect("scalar");
        URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes())
    }

    fn subscription(endpoint: &str, p256dh: &str, auth: &str) -> TargetInput {
        TargetInput::Subscription(Subscription {
            endpoint: endpoint.to_owned(),
            keys: SubscriptionKeys {
                p256dh: p256dh.to_owned(),
                auth: auth.to_owned(),
            },
        })
    }

    fn webpush(input: &TargetInput, options: ValidationOptions) -> Result<Target, InvalidTarget> {
        validate_target("webpush", input, options)
    }

    fn auth() -> String {
        URL_SAFE_NO_PAD.encode([9; 16])
    }

    #[test]
    fn an_unknown_platform_is_refused_with_its_code() {
        for platform in ["", "gcm", "FCM", "web push", "apns\0", &"x".repeat(100_000)] {
            let error = token(platform, "abc").expect_err(platform);
            assert_eq!(error.code(), "UNKNOWN_PLATFORM");
        }
    }

    #[test]
    fn fcm_tokens_are_printable_ascii_of_bounded_size() {
        let good = "dQw4w9WgXcQ:APA91bH-some_token-text";
        assert_eq!(
            token("fcm", good),
            Ok(Target::Fcm {
                token: good.to_owned()
            })
        );
        assert!(token("fcm", &"a".repeat(MAX_FCM_TOKEN_BYTES)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(MAX_FCM_TOKEN_BYTES + 1),
            "a".repeat(10_000_000),
            "has space".to_owned(),
            "tab\there".to_owned(),
            "new\nline".to_owned(),
            "nul\0".to_owned(),
            "ünïcode".to_owned(),
            "\u{202e}rtl".to_owned(),
        ] {
            let error = token("fcm", &bad).expect_err("refused");
            assert_eq!(error.code(), "INVALID_DEVICE_TOKEN");
            assert!(error.to_string().len() < 200, "no echo of the input");
        }
    }

    #[test]
    fn apns_tokens_are_even_hex_of_64_to_200_digits_and_come_back_lowercase() {
        let upper = "AB".repeat(32);
        assert_eq!(
            token("apns", &upper),
            Ok(Target::Apns {
                token: "ab".repeat(32)
            })
        );
        assert!(token("apns", &"0".repeat(200)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(62),
            "a".repeat(202),
            "a".repeat(65),
            "g".repeat(64),
            format!("{} ", "a".repeat(63)),
            "é".repeat(32),
            "a".repeat(5_000_000),
        ] {
            let error = token("apns", &bad).expect_err("refused");
            assert_eq!(error.code(), "INVALID_DEVICE_TOKEN");
        }
    }

    #[test]
    fn a_web_push_subscription_is_checked_and_normalized() {
        let padded_auth = URL_SAFE.encode([9; 16]);
        let input = subscription(
            "https://fcm.googleapis.com/fcm/send/abc:def",
            &format!("{}=", p256dh()),
            &padded_auth,
        );
        let Ok(Target::WebPush { subscription }) = webpush(&input, STRICT) else {
            panic!("a valid subscription was refused");
        };
        assert_eq!(subscription.keys.p256dh, p256dh());
        assert_eq!(subscription.keys.auth, auth());
        assert_eq!(
            subscription.endpoint,
            "https://fcm.googleapis.com/fcm/send/abc:def"
        );
    }

    #[test]
    fn web_push_endpoints_must_be_https_push_services() {
        for bad in [
            "",
            "not a url",
            "http://push.example.com/x",
            "ftp://push.example.com/x",
            "https://user:pass@push.example.com/x",
            "https://push.example.com/x#fragment",
            "https://10.0.0.1/x",
            "https://192.168.1.1/x",
            "https://[fd00::1]/x",
            "https://169.254.169.254/latest",
            "https://127.0.0.1/x",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "https://2130706433/x",
            "file:///etc/passwd",
            "data:text/plain,hello",
            &format!(
                "https://push.example.com/{}",
                "a".repeat(MAX_ENDPOINT_BYTES)
            ),
        ] {
            let error = webpush(&subscription(bad, &p256dh(), &auth()), STRICT).expect_err(bad);
            assert_eq!(error.code(), "INVALID_SUBSCRIPTION", "{bad}");
        }
    }

    #[test]
    fn loopback_endpoints_are_accepted_only_when_tests_allow_them() {
        for endpoint in [
            "http://127.0.0.1:8080/push/1",
            "https://127.0.0.1:8443/push/1",
            "http://localhost:8080/push/1",
            "http://[::1]:8080/push/1",
        ] {
            assert!(
                webpush(&subscription(endpoint, &p256dh(), &auth()), TESTS).is_ok(),
                "{endpoint}"
            );
            assert!(webpush(&subscription(endpoint, &p256dh(), &auth()), STRICT).is_err());
        }
        // Still no other address, and still no other scheme.
        for endpoint in ["http://10.0.0.1/push", "ftp://127.0.0.1/push"] {
            assert!(webpush(&subscription(endpoint, &p256dh(), &auth()), TESTS).is_err());
        }
    }

    #[test]
    fn subscription_keys_must_be_a_p256_point_and_a_16_byte_secret() {
        let endpoint = "https://push.example.com/x";
        let point = URL_SAFE_NO_PAD.decode(p256dh()).expect("decode");
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        let mut compressed_tag = point.clone();
        compressed_tag[0] = 0x02;
        let bad_keys = [
            String::new(),
            "!!!!".repeat(22),
            URL_SAFE_NO_PAD.encode(&off_curve),
            URL_SAFE_NO_PAD.encode(&compressed_tag),
            URL_SAFE_NO_PAD.encode(&point[..33]),
            URL_SAFE_NO_PAD.encode([0u8; 65]),
            URL_SAFE_NO_PAD.encode([4u8; 65]),
            format!("{}AA", p256dh()),
            "A".repeat(10_000_000),
        ];
        for bad in &bad_keys {
            let error = webpush(&subscription(endpoint, bad, &auth()), STRICT).expect_err("p256dh");
            assert_eq!(error.code(), "INVALID_SUBSCRIPTION");
        }
        // Standard base64 (with + and /) is not base64url; a standard encoding without those
        // characters is the same text, so pick bytes that need them.
        let plus_slash = STANDARD.encode([0xfb; 16]);
        for bad in [
            String::new(),
            URL_SAFE_NO_PAD.encode([1u8; 15]),
            URL_SAFE_NO_PAD.encode([1u8; 17]),
            plus_slash,
            "\u{0}".repeat(22),
            "é".repeat(11),
        ] {
            let error =
                webpush(&subscription(endpoint, &p256dh(), &bad), STRICT).expect_err("auth");
            assert_eq!(error.code(), "INVALID_SUBSCRIPTION");
        }
    }

    #[test]
    fn a_token_for_web_push_or_a_subscription_for_fcm_is_refused() {
        assert_eq!(
            token("webpush", "abc").expect_err("token").code(),
            "INVALID_SUBSCRIPTION"
        );
        let input = subscription("https://push.example.com/x", &p256dh(), &auth());
        for platform in ["fcm", "apns"] {
            assert_eq!(
                validate_target(platform, &input, STRICT)
                    .expect_err("subscription")
                    .code(),
                "INVALID_DEVICE_TOKEN"
            );
        }
    }

    #[test]
    fn input_reads_from_a_json_string_or_a_subscription_object() {
        let token: TargetInput = serde_json::from_str(r#""abc""#).expect("string");
        assert_eq!(token, TargetInput::Token("abc".to_owned()));
        let browser = serde_json::json!({
            "endpoint": "https://push.example.com/x",
            "expirationTime": null,
            "keys": {"p256dh": p256dh(), "auth": auth()},
        });
        let input: TargetInput = serde_json::from_value(browser).expect("object");
        assert!(webpush(&input, STRICT).is_ok());
        assert!(serde_json::from_str::<TargetInput>(r#"{"endpoint": 1}"#).is_err());
    }
}
