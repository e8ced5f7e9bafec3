use std::time::Duration;

use tonic::Code;

use crate::helpers::{Backend, PASSWORD, assert_fails_with, spawn_app, spawn_app_with};

on_both_backends!(
    an_expired_access_token_is_rejected,
    a_revoked_session_token_is_rejected,
    garbage_empty_unknown_and_huge_tokens_are_rejected,
    a_refresh_token_is_not_accepted_as_an_access_token,
    each_token_reveals_only_its_own_user_and_workspaces,
);

async fn an_expired_access_token_is_rejected(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.access_token_ttl = Duration::ZERO).await;

    let signed_up = app.sign_up_ok("alice@example.com", "Alice").await;
    assert_eq!(signed_up.expires_in, 0);
    let signed_in = app
        .sign_in("alice@example.com", PASSWORD)
        .await
        .expect("sign-in failed");

    for token in [signed_up.access_token, signed_in.access_token] {
        let result = app.verify_token(&token).await;
        assert_fails_with(result, Code::Unauthenticated, "INVALID_TOKEN");
    }
}

async fn a_revoked_session_token_is_rejected(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    app.verify_token(&session.access_token)
        .await
        .expect("the token does not verify before revocation");

    app.revoke_all_sessions().await;

    let result = app.verify_token(&session.access_token).await;
    assert_fails_with(result, Code::Unauthenticated, "INVALID_TOKEN");
}

async fn garbage_empty_unknown_and_huge_tokens_are_rejected(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    let well_formed_but_unknown = format!("cat_{}", "A".repeat(43));
    let bearer = format!("Bearer {}", session.access_token);
    let truncated = &session.access_token[..session.access_token.len() - 1];
    let extended = format!("{}A", session.access_token);
    let huge = format!("cat_{}", "A".repeat(2 * 1024 * 1024));

    for token in [
        "",
        " ",
        "garbage",
        "cat_",
        "cat_'; DROP TABLE sessions; --",
        "cat_ééééééééééééééééééééééééééééééééééééééééééé",
        well_formed_but_unknown.as_str(),
        bearer.as_str(),
        truncated,
        extended.as_str(),
        huge.as_str(),
    ] {
        let result = app.verify_token(token).await;
        assert_fails_with(result, Code::Unauthenticated, "INVALID_TOKEN");
    }
    // Nothing above disturbed the real token.
    app.verify_token(&session.access_token)
        .await
        .expect("the real token no longer verifies");
}

async fn a_refresh_token_is_not_accepted_as_an_access_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;

    let result = app.verify_token(&session.refresh_token).await;
    assert_fails_with(result, Code::Unauthenticated, "INVALID_TOKEN");
}

async fn each_token_reveals_only_its_own_user_and_workspaces(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_up_ok("alice@example.com", "Alice").await;
    let bob = app.sign_up_ok("bob@example.com", "Bob").await;
    assert_ne!(alice.workspaces, bob.workspaces);

    for session in [alice, bob] {
        let principal = app
            .verify_token(&session.access_token)
            .await
            .expect("a token does not verify");
        assert_eq!(principal.user, session.user);
        assert_eq!(principal.workspaces, session.workspaces);
    }
}
