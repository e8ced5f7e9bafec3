//! Refresh-token rotation with reuse detection, logout, and what edges are told.

use std::time::Duration;

use crawbl_proto::auth::v1::auth_change::Kind;
use crawbl_proto::auth::v1::revocation::Subject;
use crawbl_proto::auth::v1::{ListRevocationsRequest, Revocation};
use tonic::Code;

use crate::helpers::{Backend, assert_fails_with, next_change, spawn_app, spawn_app_with, user_id};

on_both_backends!(
    a_refresh_token_is_exchanged_once_for_new_tokens_of_the_same_session,
    a_reused_refresh_token_revokes_the_whole_session_and_says_so,
    concurrent_exchanges_of_one_refresh_token_leave_at_most_one_winner,
    an_expired_refresh_token_is_refused,
    logout_revokes_the_session_and_announces_it_once,
    logout_accepts_an_expired_access_token_but_not_a_forged_one,
);

async fn a_refresh_token_is_exchanged_once_for_new_tokens_of_the_same_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed_up = app.sign_up_ok("alice@example.com", "Alice").await;

    let refreshed = app
        .refresh(&signed_up.refresh_token)
        .await
        .expect("refresh failed");

    assert_eq!(refreshed.session_id, signed_up.session_id);
    assert_ne!(refreshed.refresh_token, signed_up.refresh_token);
    assert!(refreshed.refresh_token.starts_with("crt_"));
    assert_eq!(refreshed.user, signed_up.user);
    assert_eq!(refreshed.workspaces, signed_up.workspaces);
    let principal = app
        .verify_token(&refreshed.access_token)
        .await
        .expect("the refreshed access token does not verify");
    assert_eq!(principal.user, signed_up.user);
    // The new refresh token works in turn.
    app.refresh(&refreshed.refresh_token)
        .await
        .expect("the rotated refresh token does not work");
}

async fn a_reused_refresh_token_revokes_the_whole_session_and_says_so(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    let other_session = app
        .sign_in("alice@example.com", crate::helpers::PASSWORD)
        .await
        .expect("sign-in");
    let rotated = app.refresh(&session.refresh_token).await.expect("refresh");
    let mut changes = app.changes().await;

    let reuse = app.refresh(&session.refresh_token).await;
    assert_fails_with(reuse, Code::Unauthenticated, "REFRESH_TOKEN_REUSED");

    // Everything of that session is dead: the newest refresh token and every access token.
    let rotated_refresh = app.refresh(&rotated.refresh_token).await;
    assert_fails_with(rotated_refresh, Code::Unauthenticated, "INVALID_TOKEN");
    for token in [&session.access_token, &rotated.access_token] {
        assert_fails_with(
            app.verify_token(token).await,
            Code::Unauthenticated,
            "INVALID_TOKEN",
        );
    }
    // Edges are told at once.
    match next_change(&mut changes).await.kind {
        Some(Kind::Revoked(Revocation {
            subject: Some(Subject::SessionId(session_id)),
            user_id: revoked_user,
            until,
        })) => {
            assert_eq!(session_id, session.session_id);
            assert_eq!(revoked_user, user_id(&session));
            assert!(until > chrono::Utc::now().timestamp_millis());
        }
        other => panic!("expected a session revocation, got {other:?}"),
    }
    // The user's other session is untouched.
    app.verify_token(&other_session.access_token)
        .await
        .expect("another session of the same user was revoked");
    app.refresh(&other_session.refresh_token)
        .await
        .expect("another session's refresh token was revoked");
}

async fn concurrent_exchanges_of_one_refresh_token_leave_at_most_one_winner(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;

    let (first, second, third) = tokio::join!(
        app.refresh(&session.refresh_token),
        app.refresh(&session.refresh_token),
        app.refresh(&session.refresh_token),
    );
    let results = [first, second, third];
    let winners = results.iter().filter(|result| result.is_ok()).count();
    assert!(winners <= 1, "{results:?}");
    // The others are told why, not given an internal error.
    for status in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // A race is indistinguishable from theft: the session ends.
    for result in results.into_iter().flatten() {
        let after = app.refresh(&result.refresh_token).await;
        assert_fails_with(after, Code::Unauthenticated, "INVALID_TOKEN");
    }
}

async fn an_expired_refresh_token_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.refresh_token_ttl = Duration::ZERO).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;

    let result = app.refresh(&session.refresh_token).await;
    assert_fails_with(result, Code::Unauthenticated, "INVALID_TOKEN");
    for garbage in ["", "crt_", "crt_nope", &session.access_token] {
        assert_fails_with(
            app.refresh(garbage).await,
            Code::Unauthenticated,
            "INVALID_TOKEN",
        );
    }
}

async fn logout_revokes_the_session_and_announces_it_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;
    let mut changes = app.changes().await;

    let logged_out = app.logout(&session.access_token).await.expect("logout");
    assert_eq!(logged_out.session_id, session.session_id);
    assert_eq!(logged_out.user_id, user_id(&session));

    assert_fails_with(
        app.verify_token(&session.access_token).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    assert_fails_with(
        app.refresh(&session.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    match next_change(&mut changes).await.kind {
        Some(Kind::Revoked(revocation)) => assert_eq!(
            revocation.subject,
            Some(Subject::SessionId(session.session_id.clone()))
        ),
        other => panic!("expected a session revocation, got {other:?}"),
    }
    // Logging out again is fine and announces nothing new.
    app.logout(&session.access_token)
        .await
        .expect("a second logout");
    let quiet = tokio::time::timeout(Duration::from_millis(300), next_change(&mut changes)).await;
    assert!(quiet.is_err(), "a second announcement: {quiet:?}");

    // Edges that missed the announcement find it in the revocation list.
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
            .any(|r| r.subject == Some(Subject::SessionId(session.session_id.clone()))),
        "{listed:?}"
    );
}

async fn logout_accepts_an_expired_access_token_but_not_a_forged_one(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.access_token_ttl = Duration::ZERO).await;
    let session = app.sign_up_ok("alice@example.com", "Alice").await;

    let forged = crawbl_infra::jws::SigningKey::generate("forger")
        .sign(&serde_json::json!({"sub": "x", "sid": session.session_id}))
        .expect("sign");
    assert_fails_with(
        app.logout(&forged).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    assert_fails_with(
        app.logout("garbage").await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    app.logout(&session.access_token)
        .await
        .expect("logout with an expired token");
    assert_fails_with(
        app.refresh(&session.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
}
