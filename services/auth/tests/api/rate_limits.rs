//! Failed sign-ins are rate limited per account and per client address.

use tonic::Code;

use crate::helpers::{Backend, PASSWORD, assert_fails_with, expect_failure, spawn_app_with};

on_both_backends!(
    an_account_is_locked_after_its_failures_even_for_the_right_password,
    an_address_is_locked_after_failures_on_any_accounts,
    a_successful_sign_in_clears_the_accounts_failures,
);

fn limits(config: &mut crawbl_auth::Config) {
    config.sign_in_limits.per_account = 3;
    config.sign_in_limits.per_address = 5;
}

async fn an_account_is_locked_after_its_failures_even_for_the_right_password(backend: Backend) {
    let app = spawn_app_with(backend, limits).await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    for attempt in 0..3 {
        let address = format!("10.0.0.{attempt}");
        assert_fails_with(
            app.sign_in_from("alice@example.com", "wrong password", &address)
                .await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    let locked = expect_failure(
        app.sign_in_from("ALICE@example.com", PASSWORD, "10.0.0.9")
            .await,
    );
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert_eq!(
        crawbl_infra::grpc::stable_code(&locked),
        Some("RATE_LIMITED")
    );
    let retry_after = crawbl_infra::grpc::retry_after(&locked).expect("retry after");
    assert!((1..=900).contains(&retry_after), "{retry_after}");

    // Unknown accounts are limited the same way, so the limit reveals nothing.
    for _ in 0..3 {
        let _ = app.sign_in_from("ghost@example.com", "whatever!", "").await;
    }
    assert_fails_with(
        app.sign_in_from("ghost@example.com", "whatever!", "").await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
}

async fn an_address_is_locked_after_failures_on_any_accounts(backend: Backend) {
    let app = spawn_app_with(backend, limits).await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    for index in 0..5 {
        let email = format!("guess-{index}@example.com");
        assert_fails_with(
            app.sign_in_from(&email, "wrong password", "192.0.2.1")
                .await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert_fails_with(
        app.sign_in_from("alice@example.com", PASSWORD, "192.0.2.1")
            .await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    // Another address is not affected.
    app.sign_in_from("alice@example.com", PASSWORD, "192.0.2.2")
        .await
        .expect("sign-in from another address");
}

async fn a_successful_sign_in_clears_the_accounts_failures(backend: Backend) {
    let app = spawn_app_with(backend, limits).await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    for _ in 0..2 {
        let _ = app.sign_in("alice@example.com", "wrong password").await;
    }
    app.sign_in("alice@example.com", PASSWORD)
        .await
        .expect("sign-in");
    for _ in 0..2 {
        let _ = app.sign_in("alice@example.com", "wrong password").await;
    }
    app.sign_in("alice@example.com", PASSWORD)
        .await
        .expect("the count started over after the success");
}
