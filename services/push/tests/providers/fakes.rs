//! The fakes refuse what the real providers would: a test that passes against them proves the
//! sender got the protocol right, not merely that something arrived.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::helpers::tls_trusting;
use crate::support::fake_fcm::FakeFcm;
use crate::support::fake_webpush::FakePushService;
use crate::support::jws;
use crate::support::tls::TestCa;

fn client(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_trusting(ca))
        .build()
        .expect("client")
}

/// A compact ES256 JWT signed with RustCrypto's `p256`.
fn es256(secret: &p256::SecretKey, claims: &serde_json::Value) -> String {
    use p256::ecdsa::signature::Signer as _;
    let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "ES256"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{claims}");
    let signature: p256::ecdsa::Signature =
        p256::ecdsa::SigningKey::from(secret).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[tokio::test]
async fn fake_fcm_refuses_a_tampered_assertion_and_an_unknown_access_token() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let client = client(&ca);

    // A well-formed RS256 JWT whose signature is not the service account's.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"iss": crate::support::fake_fcm::CLIENT_EMAIL, "aud": fake.token_uri,
               "scope": "https://www.googleapis.com/auth/firebase.messaging",
               "iat": jws::now(), "exp": jws::now() + 3600})
        .to_string(),
    );
    let forged = format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
    let response = client
        .post(&fake.token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", forged.as_str()),
        ])
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 400);

    let response = client
        .post(format!(
            "{}/v1/projects/crawbl-test/messages:send",
            fake.endpoint
        ))
        .bearer_auth("made-up")
        .json(&json!({"message": {"token": "t", "notification": {"title": "a", "body": "b"}}}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 401);
    assert_eq!(
        fake.refusals(),
        vec![
            "token: the RS256 signature does not verify",
            "send: an unknown or expired access token"
        ]
    );
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn fake_push_service_refuses_bad_vapid_and_undecryptable_bodies() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let subscription = service.subscribe();
    let endpoint = subscription["endpoint"].as_str().expect("endpoint");
    let client = client(&ca);
    let key = p256::SecretKey::from_slice(&[3; 32]).expect("key");
    let public = URL_SAFE_NO_PAD.encode(key.public_key().to_sec1_bytes());
    let other_public = URL_SAFE_NO_PAD.encode(
        p256::SecretKey::from_slice(&[4; 32])
            .expect("key")
            .public_key()
            .to_sec1_bytes(),
    );
    let now = jws::now();
    let good_claims =
        json!({"aud": service.origin, "exp": now + 3600, "sub": "mailto:a@b.example"});
    let cases = [
        (
            es256(&key, &good_claims),
            other_public.clone(),
            "vapid: the ES256 signature does not verify",
        ),
        (
            es256(
                &key,
                &json!({"aud": "https://elsewhere.example", "exp": now + 3600, "sub": "mailto:a@b.example"}),
            ),
            public.clone(),
            "vapid aud",
        ),
        (
            es256(
                &key,
                &json!({"aud": service.origin, "exp": now + 25 * 3600, "sub": "mailto:a@b.example"}),
            ),
            public.clone(),
            "more than 24 hours",
        ),
        (
            es256(
                &key,
                &json!({"aud": service.origin, "exp": now + 3600, "sub": "a@b.example"}),
            ),
            public.clone(),
            "is not mailto: or https:",
        ),
        // VAPID right, the body is not an aes128gcm message for this subscription.
        (es256(&key, &good_claims), public.clone(), "decrypt:"),
    ];
    for (token, k, expected) in cases {
        let response = client
            .post(endpoint)
            .header("authorization", format!("vapid t={token}, k={k}"))
            .header("ttl", "60")
            .header("content-encoding", "aes128gcm")
            .body(vec![0u8; 200])
            .send()
            .await
            .expect("response");
        assert!(response.status().is_client_error(), "{expected}");
        let refusals = service.refusals();
        let last = refusals.last().expect("a refusal");
        assert!(last.contains(expected), "{last} should say {expected}");
    }
    assert!(service.received().is_empty());
}
