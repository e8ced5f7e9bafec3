use tonic::Code;

use crate::helpers::{Backend, PASSWORD, assert_fails_with, spawn_app};

on_both_backends!(
    sign_up_returns_a_session_whose_token_verifies_to_the_new_user_and_their_own_workspace,
    sign_up_with_a_taken_email_fails_with_email_taken,
    concurrent_sign_ups_with_one_email_create_exactly_one_account,
    sign_up_with_an_invalid_email_fails_with_invalid_email,
    sign_up_with_a_password_under_8_characters_fails_with_weak_password,
    sign_up_with_a_password_over_256_characters_fails_with_invalid_password,
    sign_up_with_a_blank_or_overlong_display_name_fails_with_invalid_display_name,
);

async fn sign_up_returns_a_session_whose_token_verifies_to_the_new_user_and_their_own_workspace(
    backend: Backend,
) {
    let app = spawn_app(backend).await;

    let session = app.sign_up_ok("alice@example.com", "  Alice  ").await;

    // A JWT: header.claims.signature.
    assert_eq!(session.access_token.split('.').count(), 3);
    assert!(session.refresh_token.starts_with("crt_"));
    assert_eq!(session.expires_in, 900);
    assert!(uuid::Uuid::parse_str(&session.session_id).is_ok());
    let user = session.user.clone().expect("the session has no user");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.display_name, "Alice");
    assert!(uuid::Uuid::parse_str(&user.id).is_ok(), "{}", user.id);
    assert_eq!(session.workspaces.len(), 1);
    let workspace = &session.workspaces[0];
    assert_eq!(workspace.name, "Alice's workspace");
    assert_eq!(workspace.role, "owner");

    let principal = app
        .verify_token(&session.access_token)
        .await
        .expect("the new access token does not verify");
    assert_eq!(principal.user, Some(user));
    assert_eq!(principal.workspaces, session.workspaces);
}

async fn sign_up_with_a_taken_email_fails_with_email_taken(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    for email in ["alice@example.com", "  ALICE@Example.com "] {
        let result = app.sign_up(email, "another password", "Impostor").await;
        assert_fails_with(result, Code::AlreadyExists, "EMAIL_TAKEN");
    }
    // The first account is intact.
    app.sign_in("alice@example.com", PASSWORD)
        .await
        .expect("the original account no longer signs in");
}

async fn concurrent_sign_ups_with_one_email_create_exactly_one_account(backend: Backend) {
    let app = spawn_app(backend).await;

    let (first, second, third, fourth) = tokio::join!(
        app.sign_up("race@example.com", PASSWORD, "Racer 1"),
        app.sign_up("race@example.com", PASSWORD, "Racer 2"),
        app.sign_up("Race@example.com", PASSWORD, "Racer 3"),
        app.sign_up(" race@EXAMPLE.com", PASSWORD, "Racer 4"),
    );
    let results = [first, second, third, fourth];

    let accepted = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(accepted, 1, "{results:?}");
    for result in results.into_iter().filter(Result::is_err) {
        assert_fails_with(result, Code::AlreadyExists, "EMAIL_TAKEN");
    }
}

async fn sign_up_with_an_invalid_email_fails_with_invalid_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let too_long = format!("{}@example.com", "a".repeat(250));
    for email in [
        "",
        "   ",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "alice@@example.com",
        "al ice@example.com",
        "alice@example..com",
        too_long.as_str(),
    ] {
        let result = app.sign_up(email, PASSWORD, "Alice").await;
        assert_fails_with(result, Code::InvalidArgument, "INVALID_EMAIL");
    }
}

async fn sign_up_with_a_password_under_8_characters_fails_with_weak_password(backend: Backend) {
    let app = spawn_app(backend).await;
    for password in ["", "1234567", "ééééééé"] {
        let result = app.sign_up("alice@example.com", password, "Alice").await;
        assert_fails_with(result, Code::InvalidArgument, "WEAK_PASSWORD");
    }
}

async fn sign_up_with_a_password_over_256_characters_fails_with_invalid_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let result = app
        .sign_up("alice@example.com", &"x".repeat(257), "Alice")
        .await;
    assert_fails_with(result, Code::InvalidArgument, "INVALID_PASSWORD");
}

async fn sign_up_with_a_blank_or_overlong_display_name_fails_with_invalid_display_name(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let too_long = "x".repeat(101);
    for display_name in ["", "   ", too_long.as_str()] {
        let result = app
            .sign_up("alice@example.com", PASSWORD, display_name)
            .await;
        assert_fails_with(result, Code::InvalidArgument, "INVALID_DISPLAY_NAME");
    }
}
