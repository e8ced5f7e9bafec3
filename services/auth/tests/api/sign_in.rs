use tonic::Code;

use crate::helpers::{Backend, PASSWORD, assert_fails_with, error_code, expect_failure, spawn_app};

on_both_backends!(
    sign_in_with_the_right_password_starts_a_new_session,
    sign_in_with_a_wrong_password_and_with_an_unknown_email_fail_identically,
    sign_in_with_malformed_or_oversized_input_fails_with_invalid_credentials,
    emails_are_case_insensitive_and_stored_trimmed_and_lowercased,
);

async fn sign_in_with_the_right_password_starts_a_new_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed_up = app.sign_up_ok("alice@example.com", "Alice").await;

    let signed_in = app
        .sign_in("alice@example.com", PASSWORD)
        .await
        .expect("sign-in with the right password failed");

    assert_ne!(signed_in.access_token, signed_up.access_token);
    assert_ne!(signed_in.refresh_token, signed_up.refresh_token);
    assert_eq!(signed_in.expires_in, 900);
    assert_ne!(signed_in.session_id, signed_up.session_id);
    assert_eq!(signed_in.user, signed_up.user);
    assert_eq!(signed_in.workspaces, signed_up.workspaces);
    for token in [&signed_up.access_token, &signed_in.access_token] {
        let principal = app
            .verify_token(token)
            .await
            .expect("a token does not verify");
        assert_eq!(principal.user, signed_up.user);
    }
}

async fn sign_in_with_a_wrong_password_and_with_an_unknown_email_fail_identically(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    let wrong_password = expect_failure(app.sign_in("alice@example.com", "not the password").await);
    let unknown_email = expect_failure(app.sign_in("nobody@example.com", PASSWORD).await);

    assert_eq!(wrong_password.code(), Code::Unauthenticated);
    assert_eq!(error_code(&wrong_password), Some("INVALID_CREDENTIALS"));
    assert_eq!(unknown_email.code(), wrong_password.code());
    assert_eq!(error_code(&unknown_email), error_code(&wrong_password));
    assert_eq!(unknown_email.message(), wrong_password.message());
}

async fn sign_in_with_malformed_or_oversized_input_fails_with_invalid_credentials(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.sign_up_ok("alice@example.com", "Alice").await;
    let huge = "x".repeat(1024 * 1024);

    for (email, password) in [
        ("", ""),
        ("alice@example.com", ""),
        ("not an email", PASSWORD),
        (huge.as_str(), PASSWORD),
        ("alice@example.com", huge.as_str()),
    ] {
        let result = app.sign_in(email, password).await;
        assert_fails_with(result, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
}

async fn emails_are_case_insensitive_and_stored_trimmed_and_lowercased(backend: Backend) {
    let app = spawn_app(backend).await;

    let session = app.sign_up_ok("  Bob.Smith@Example.COM ", "Bob").await;
    let user = session.user.expect("the session has no user");
    assert_eq!(user.email, "bob.smith@example.com");

    for email in [
        "bob.smith@example.com",
        "BOB.SMITH@EXAMPLE.COM",
        " Bob.Smith@example.com",
    ] {
        let signed_in = app
            .sign_in(email, PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("sign-in as {email:?} failed: {status:?}"));
        assert_eq!(
            signed_in.user.as_ref().map(|u| u.id.as_str()),
            Some(user.id.as_str())
        );
    }
}
