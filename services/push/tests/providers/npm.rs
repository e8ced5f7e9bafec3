//! Web Push checked against another implementation: the npm `web-push` library (and its
//! `http_ece`) that Node.js servers use, from the repository's `tests/js` packages.
//!
//! - What npm `web-push` sends, the fake push service verifies (VAPID) and decrypts: the fake's
//!   RFC 8291 side is right, so what it accepts from our sender is right too.
//! - What our sender sends, npm's `http_ece` decrypts as a browser would.
//!
//! Needs Node.js and npm, like the end-to-end tests; the packages are installed (`npm ci`) when
//! missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use crawbl_push::{EcSigningKey, Notification, Outcome, WebPushConfig, WebPushSender};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::helpers::{VAPID_SUBJECT, subscription, tls_trusting};
use crate::support::fake_webpush::FakePushService;
use crate::support::tls::TestCa;

const RUN_LIMIT: Duration = Duration::from_secs(60);

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

/// `npm ci` once, unless `web-push` is already installed.
async fn install() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let dir = js_dir();
            if dir.join("node_modules/web-push/package.json").exists() {
                return;
            }
            let output = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .await
                .unwrap_or_else(|error| {
                    panic!("npm is needed for the Web Push check with npm web-push: {error}")
                });
            assert!(
                output.status.success(),
                "npm ci in {} failed:\n{}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        })
        .await;
}

/// Runs `tests/js/webpush.mjs` with `request` on stdin; its JSON answer.
async fn node(request: Value, ca: &TestCa) -> Value {
    install().await;
    let dir = js_dir();
    let ca_file = std::env::temp_dir().join(format!(
        "crawbl-push-npm-ca-{}-{}.pem",
        std::process::id(),
        URL_SAFE_NO_PAD.encode(&ca.der.as_ref()[ca.der.len() - 8..])
    ));
    std::fs::write(&ca_file, &ca.pem).expect("ca file");
    let mut child = Command::new("node")
        .arg("webpush.mjs")
        .current_dir(&dir)
        .env("NODE_EXTRA_CA_CERTS", &ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("Node.js is needed (node ≥ 18 on PATH): {error}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("node finished in time")
        .expect("node ran");
    let _ = std::fs::remove_file(&ca_file);
    assert!(
        output.status.success(),
        "node webpush.mjs failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "node printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test]
async fn what_npm_web_push_sends_the_fake_push_service_verifies_and_decrypts() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let subscription = service.subscribe();
    let scalar = [0x21u8; 32];
    let key = EcSigningKey::from_scalar(&scalar).expect("key");
    let payload = r#"{"title":"Assistant","body":"from npm web-push ✓"}"#;

    let answer = node(
        json!({"send": {
            "subscription": subscription,
            "payload": payload,
            "ttl": 90,
            "vapid": {
                "subject": VAPID_SUBJECT,
                // Our public key for this scalar: npm signs with the scalar, the fake verifies
                // with this key, so it also checks our derivation of it.
                "publicKey": key.public_key_base64url(),
                "privateKey": URL_SAFE_NO_PAD.encode(scalar),
            },
        }}),
        &ca,
    )
    .await;

    assert_eq!(answer["statusCode"], 201, "{answer}");
    assert_eq!(service.refusals(), Vec::<String>::new());
    let received = &service.delivered()[0];
    assert_eq!(received.plaintext, payload.as_bytes());
    assert_eq!(received.ttl, 90);
    assert_eq!(received.vapid_key, key.public_key_base64url());
}

#[tokio::test]
async fn what_our_sender_sends_npm_http_ece_decrypts() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = WebPushSender::new(
        WebPushConfig::new(crate::helpers::vapid_key(), VAPID_SUBJECT).expect("config"),
        &tls_trusting(&ca),
    )
    .expect("sender");
    let notification = Notification::new("Assistant", "for a browser ✓").with_data("k", "v");

    assert_eq!(
        sender
            .send(&subscription(service.subscribe()), &notification)
            .await,
        Outcome::Sent
    );

    let received = &service.delivered()[0];
    let (private_key, auth) = service.user_agent_secrets(received.subscription_id);
    let answer = node(
        json!({"decrypt": {
            "body": STANDARD.encode(&received.body),
            "privateKey": URL_SAFE_NO_PAD.encode(private_key),
            "authSecret": URL_SAFE_NO_PAD.encode(auth),
        }}),
        &ca,
    )
    .await;
    let plaintext: Value =
        serde_json::from_str(answer["plaintext"].as_str().expect("plaintext")).expect("json");
    assert_eq!(
        plaintext,
        json!({"title": "Assistant", "body": "for a browser ✓", "data": {"k": "v"}})
    );
}
