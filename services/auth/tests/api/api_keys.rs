//! API keys: created (shown once), listed, verified, revoked at once.

use crawbl_proto::auth::v1::auth_change::Kind;
use crawbl_proto::auth::v1::revocation::Subject;
use crawbl_proto::auth::v1::{
    CreateApiKeyRequest, CreatedApiKey, ListApiKeysRequest, ListRevocationsRequest,
    RevokeApiKeyRequest, VerifyApiKeyRequest,
};
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_fails_with, next_change, spawn_app, user_id};

on_both_backends!(
    a_key_is_shown_once_listed_without_its_secret_and_verifies_to_its_owner,
    a_revoked_key_stops_verifying_and_edges_are_told,
    nobody_can_list_or_revoke_another_users_keys,
    key_names_are_validated,
);

async fn create(app: &TestApp, actor: &str, name: &str) -> Result<CreatedApiKey, tonic::Status> {
    Ok(app
        .client
        .clone()
        .create_api_key(CreateApiKeyRequest {
            actor_user_id: actor.to_owned(),
            name: name.to_owned(),
        })
        .await?
        .into_inner())
}

async fn verify(app: &TestApp, key: &str) -> Result<String, tonic::Status> {
    Ok(app
        .client
        .clone()
        .verify_api_key(VerifyApiKeyRequest {
            key: key.to_owned(),
        })
        .await?
        .into_inner()
        .user_id)
}

async fn revoke(app: &TestApp, actor: &str, id: &str) -> Result<(), tonic::Status> {
    app.client
        .clone()
        .revoke_api_key(RevokeApiKeyRequest {
            actor_user_id: actor.to_owned(),
            api_key_id: id.to_owned(),
        })
        .await?;
    Ok(())
}

async fn a_key_is_shown_once_listed_without_its_secret_and_verifies_to_its_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = user_id(&app.sign_up_ok("alice@example.com", "Alice").await);

    let created = create(&app, &alice, "  ci bot ").await.expect("create");
    let key = created.api_key.clone().expect("api key");
    assert!(created.key.starts_with("cak_"), "{}", created.key);
    assert_eq!(key.name, "ci bot");
    assert!(created.key.starts_with(&key.prefix) && key.prefix.len() == 12);
    assert_eq!(key.last_used_at, None);

    assert_eq!(verify(&app, &created.key).await.expect("verify"), alice);
    let principal = app
        .verify_token(&created.key)
        .await
        .expect("VerifyToken accepts API keys too");
    assert_eq!(principal.user.expect("user").id, alice);

    let listed = app
        .client
        .clone()
        .list_api_keys(ListApiKeysRequest {
            actor_user_id: alice.clone(),
        })
        .await
        .expect("list")
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, key.id);
    assert!(listed[0].last_used_at.is_some(), "use is recorded");
    assert!(
        !format!("{listed:?}").contains(&created.key),
        "the secret is never listed"
    );
}

async fn a_revoked_key_stops_verifying_and_edges_are_told(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = user_id(&app.sign_up_ok("alice@example.com", "Alice").await);
    let created = create(&app, &alice, "deploy").await.expect("create");
    let kept = create(&app, &alice, "kept").await.expect("create");
    let key_id = created.api_key.as_ref().expect("key").id.clone();
    let mut changes = app.changes().await;

    revoke(&app, &alice, &key_id).await.expect("revoke");

    assert_fails_with(
        verify(&app, &created.key).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    verify(&app, &kept.key)
        .await
        .expect("the other key still works");
    match next_change(&mut changes).await.kind {
        Some(Kind::Revoked(revocation)) => {
            assert_eq!(revocation.subject, Some(Subject::ApiKeyId(key_id.clone())));
            assert_eq!(revocation.user_id, alice);
        }
        other => panic!("expected a key revocation, got {other:?}"),
    }
    let listed = app
        .client
        .clone()
        .list_revocations(ListRevocationsRequest {})
        .await
        .expect("list revocations")
        .into_inner()
        .revocations;
    assert!(
        listed
            .iter()
            .any(|r| r.subject == Some(Subject::ApiKeyId(key_id.clone())))
    );
    // Revoking again: it no longer exists for anyone.
    assert_fails_with(
        revoke(&app, &alice, &key_id).await,
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
}

async fn nobody_can_list_or_revoke_another_users_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = user_id(&app.sign_up_ok("alice@example.com", "Alice").await);
    let mallory = user_id(&app.sign_up_ok("mallory@example.com", "Mallory").await);
    let created = create(&app, &alice, "mine").await.expect("create");
    let key_id = created.api_key.expect("key").id;

    assert_fails_with(
        revoke(&app, &mallory, &key_id).await,
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    let theirs = app
        .client
        .clone()
        .list_api_keys(ListApiKeysRequest {
            actor_user_id: mallory,
        })
        .await
        .expect("list")
        .into_inner()
        .api_keys;
    assert!(theirs.is_empty());
    verify(&app, &created.key).await.expect("still valid");
}

async fn key_names_are_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = user_id(&app.sign_up_ok("alice@example.com", "Alice").await);
    for name in ["", "   ", &"x".repeat(101)] {
        assert_fails_with(
            create(&app, &alice, name).await,
            Code::InvalidArgument,
            "INVALID_API_KEY_NAME",
        );
    }
    for garbage in [
        "",
        "cak_",
        "cak_nope",
        "crt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_fails_with(
            verify(&app, garbage).await,
            Code::Unauthenticated,
            "INVALID_TOKEN",
        );
    }
}
