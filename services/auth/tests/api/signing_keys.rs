//! Access tokens are signed JWTs the edge verifies with published keys; keys rotate, once per
//! rotation however many replicas find the newest key due at the same moment.

use std::time::Duration;

use crawbl_auth::tokens::{AUDIENCE, AccessClaims, ISSUER};
use crawbl_infra::jws::{self, PublicKey};
use crawbl_proto::auth::v1::{GetSigningKeysRequest, RotateSigningKeyRequest, SigningKeys};
use tonic::Code;

use futures::future::join_all;

use crate::helpers::{
    Backend, TestApp, assert_fails_with, spawn_app, spawn_app_with, spawn_apps_at_once,
    spawn_replica,
};

on_both_backends!(
    access_tokens_verify_with_the_published_key_and_carry_the_session,
    rotation_publishes_the_new_key_first_and_keeps_the_previous_one,
    every_replica_and_restart_signs_with_the_same_stored_key,
    tokens_for_another_audience_or_issuer_are_refused,
    replicas_finding_the_key_due_at_the_same_moment_make_exactly_one_new_key,
    concurrent_rotation_checks_in_one_instance_make_exactly_one_new_key,
);

async fn keys(app: &TestApp) -> SigningKeys {
    app.client
        .clone()
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .expect("get signing keys")
        .into_inner()
}

fn public_keys(keys: &SigningKeys) -> Vec<PublicKey> {
    keys.keys
        .iter()
        .map(|key| PublicKey::from_bytes(key.kid.clone(), &key.public_key).expect("a valid key"))
        .collect()
}

fn claims_of(token: &str, keys: &[PublicKey]) -> AccessClaims {
    let parsed = jws::parse(token).expect("a JWS");
    let key = keys
        .iter()
        .find(|key| key.kid() == parsed.kid())
        .expect("signed with a published key");
    parsed.verify(key).expect("the signature verifies")
}

async fn access_tokens_verify_with_the_published_key_and_carry_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    let published = keys(&app).await;
    assert_eq!(published.keys.len(), 1);
    assert_eq!(published.keys[0].algorithm, "EdDSA");
    assert_eq!(
        (published.issuer.as_str(), published.audience.as_str()),
        (ISSUER, AUDIENCE)
    );

    let claims = claims_of(&session.access_token, &public_keys(&published));
    assert_eq!(claims.sub, session.user.as_ref().expect("user").id);
    assert_eq!(claims.sid, session.session_id);
    assert_eq!(claims.aud, "crawbl-edge");
    assert_eq!(claims.exp - claims.iat, session.expires_in);
}

async fn rotation_publishes_the_new_key_first_and_keeps_the_previous_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.sign_up_ok("alice@example.com", "Alice").await;
    let old = keys(&app).await;

    let rotated = app
        .client
        .clone()
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotated.keys.len(), 2);
    assert_eq!(rotated.keys[1].kid, old.keys[0].kid);
    assert_ne!(rotated.keys[0].kid, old.keys[0].kid);

    let after = app
        .sign_in("alice@example.com", crate::helpers::PASSWORD)
        .await
        .expect("sign-in");
    let new_kid = jws::parse(&after.access_token)
        .expect("jws")
        .kid()
        .to_owned();
    assert_eq!(new_kid, rotated.keys[0].kid);
    // Tokens of both keys verify.
    for token in [&before.access_token, &after.access_token] {
        app.verify_token(token)
            .await
            .expect("a token does not verify");
    }
    assert_eq!(keys(&app).await.keys, rotated.keys);
}

async fn every_replica_and_restart_signs_with_the_same_stored_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    let replica = spawn_replica(&app, |_| {}).await;

    assert_eq!(keys(&replica).await.keys, keys(&app).await.keys);
    replica
        .verify_token(&session.access_token)
        .await
        .expect("a token from one replica does not verify on another");

    // A rotation on one replica is seen by the other when it is asked for keys.
    app.client
        .clone()
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .expect("rotate");
    assert_eq!(keys(&replica).await.keys, keys(&app).await.keys);
}

async fn tokens_for_another_audience_or_issuer_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    let key = app.current_signing_key().await;
    let genuine = claims_of(&session.access_token, &[key.public_key()]);

    let now = chrono::Utc::now().timestamp();
    let cases = [
        AccessClaims {
            aud: "crawbl-admin".to_owned(),
            ..genuine.clone()
        },
        AccessClaims {
            iss: "someone-else".to_owned(),
            ..genuine.clone()
        },
        AccessClaims {
            exp: now - 1,
            ..genuine.clone()
        },
    ];
    for claims in cases {
        let token = key.sign(&claims).expect("sign");
        assert_fails_with(
            app.verify_token(&token).await,
            Code::Unauthenticated,
            "INVALID_TOKEN",
        );
    }
    // The same claims with the real key are fine (the forging above is sound).
    let remade = key.sign(&genuine).expect("sign");
    app.verify_token(&remade)
        .await
        .expect("re-signed genuine claims");
}

/// A rotation period of 2 s (it must exceed the access-token lifetime, 1 s here).
fn rotating_every_two_seconds(config: &mut crawbl_auth::Config) {
    config.access_token_ttl = Duration::from_secs(1);
    config.signing_key_rotation = Duration::from_secs(2);
}

/// Sleeps until the newest of `published` is older than the 2-second rotation period.
async fn until_the_newest_is_due(published: &SigningKeys) {
    let newest = published
        .keys
        .iter()
        .map(|key| key.created_at)
        .max()
        .expect("a published key");
    let due_at = newest + 2_000 + 20;
    let now = chrono::Utc::now().timestamp_millis();
    let wait = u64::try_from(due_at - now).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Each call of `GetSigningKeys` rotates when the newest key is due, like the periodic check.
/// Two replicas asked 8 times each at once, when the key is due, make one new key between them
/// (not one each), twice in a row, and then publish the same keys.
async fn replicas_finding_the_key_due_at_the_same_moment_make_exactly_one_new_key(
    backend: Backend,
) {
    let app = spawn_app_with(backend, rotating_every_two_seconds).await;
    let replica = spawn_replica(&app, rotating_every_two_seconds).await;
    let first = keys(&app).await;
    assert_eq!(first.keys.len(), 1);

    let mut published = first;
    for rotation in 1..=2 {
        until_the_newest_is_due(&published).await;
        let answers = join_all((0..16).map(|index| {
            let replica = if index % 2 == 0 { &app } else { &replica };
            keys(replica)
        }))
        .await;
        published = keys(&app).await;
        assert_eq!(
            published.keys.len(),
            1 + rotation,
            "rotation {rotation}: {:?}",
            published.keys
        );
        assert_eq!(keys(&replica).await.keys, published.keys);
        // Every answer already had the new key first: none saw a second one.
        for answer in answers {
            assert_eq!(answer.keys[0].kid, published.keys[0].kid);
        }
    }
}

/// The same in one instance: concurrent checks that find the key due make one new key.
async fn concurrent_rotation_checks_in_one_instance_make_exactly_one_new_key(backend: Backend) {
    let app = spawn_app_with(backend, rotating_every_two_seconds).await;
    let first = keys(&app).await;

    until_the_newest_is_due(&first).await;
    join_all((0..16).map(|_| keys(&app))).await;
    let published = keys(&app).await;
    assert_eq!(published.keys.len(), 2, "{:?}", published.keys);
    assert_eq!(published.keys[1].kid, first.keys[0].kid);
}

/// Replicas that start together on an empty database make one first key between them. (Postgres
/// only: there the migrations of replicas starting together are serialized by sqlx's lock.)
#[tokio::test]
async fn replicas_starting_together_on_an_empty_database_make_one_first_key_on_postgres() {
    let apps = spawn_apps_at_once(Backend::Postgres, 4).await;
    let published = keys(&apps[0]).await;
    assert_eq!(published.keys.len(), 1, "{:?}", published.keys);
    for app in &apps[1..] {
        assert_eq!(keys(app).await.keys, published.keys);
    }
}
