//! Failed sign-ins are rate limited per account and per client address, with every attempt
//! counted before its password is checked, so concurrent guesses (on one replica or many) cannot
//! get more checks than the limit.

use std::time::Duration;

use crawbl_proto::auth::v1::Session;
use futures::future::join_all;
use tonic::Code;

use crate::helpers::{
    Backend, PASSWORD, TestApp, assert_fails_with, error_code, expect_failure, spawn_app_with,
    spawn_replica,
};

on_both_backends!(
    an_account_is_locked_after_its_failures_even_for_the_right_password,
    an_address_is_locked_after_failures_on_any_accounts,
    a_successful_sign_in_clears_the_accounts_failures,
    concurrent_wrong_passwords_for_one_account_get_at_most_the_accounts_limit_checked,
    concurrent_wrong_guesses_from_one_address_get_at_most_the_addresses_limit_checked,
    concurrent_wrong_passwords_on_two_replicas_get_at_most_the_limit_checked_between_them,
    a_right_password_within_the_budget_clears_the_account_and_uses_none_of_it,
    right_passwords_use_none_of_the_addresses_budget,
    concurrent_right_passwords_beyond_the_budget_are_told_to_retry_in_a_second,
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

/// How a batch of sign-in attempts was answered.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    signed_in: usize,
    /// `INVALID_CREDENTIALS`: the password was checked and was wrong.
    checked_and_wrong: usize,
    /// `RATE_LIMITED`, with the largest `retry-after` seen.
    rate_limited: usize,
    longest_retry_after: u64,
}

fn tally(answers: Vec<Result<Session, tonic::Status>>) -> Tally {
    let mut tally = Tally::default();
    for answer in answers {
        match answer {
            Ok(_) => tally.signed_in += 1,
            Err(status) => match (status.code(), error_code(&status)) {
                (Code::Unauthenticated, Some("INVALID_CREDENTIALS")) => {
                    tally.checked_and_wrong += 1;
                }
                (Code::ResourceExhausted, Some("RATE_LIMITED")) => {
                    let retry_after = crawbl_infra::grpc::retry_after(&status)
                        .unwrap_or_else(|| panic!("a 429 without retry-after: {status:?}"));
                    assert!(retry_after >= 1, "{status:?}");
                    tally.rate_limited += 1;
                    tally.longest_retry_after = tally.longest_retry_after.max(retry_after);
                }
                _ => panic!("an unexpected answer: {status:?}"),
            },
        }
    }
    tally
}

/// `count` sign-ins of `email` at once, the `index`th from `address(index)`.
async fn at_once(
    app: &TestApp,
    count: usize,
    email: impl Fn(usize) -> String,
    password: &str,
    address: impl Fn(usize) -> String,
) -> Vec<Result<Session, tonic::Status>> {
    join_all((0..count).map(|index| {
        let (email, address) = (email(index), address(index));
        async move { app.sign_in_from(&email, password, &address).await }
    }))
    .await
}

/// The `retry-after` of a sign-in that must be rate limited.
fn rate_limited_for(answer: Result<Session, tonic::Status>) -> u64 {
    let status = expect_failure(answer);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_code(&status), Some("RATE_LIMITED"), "{status:?}");
    crawbl_infra::grpc::retry_after(&status).expect("retry-after")
}

/// 40 guesses at once from 40 addresses (a distributed guesser): exactly 5 are checked (the
/// account's limit), 35 are refused before any hashing; the right password then waits for the
/// window (4 s here) to end, and works after it.
async fn concurrent_wrong_passwords_for_one_account_get_at_most_the_accounts_limit_checked(
    backend: Backend,
) {
    let window = Duration::from_secs(4);
    let app = spawn_app_with(backend, |config| {
        config.sign_in_limits.per_account = 5;
        config.sign_in_limits.window = window;
    })
    .await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    let answers = at_once(
        &app,
        40,
        |_| "alice@example.com".to_owned(),
        "wrong password",
        |index| format!("10.1.0.{index}"),
    )
    .await;
    let tally = tally(answers);
    assert_eq!(
        (tally.checked_and_wrong, tally.rate_limited, tally.signed_in),
        (5, 35, 0),
        "{tally:?}"
    );

    let retry_after = rate_limited_for(app.sign_in("alice@example.com", PASSWORD).await);
    assert!(retry_after <= window.as_secs(), "{retry_after}");
    // Retry-after is rounded up to whole seconds, so the window has ended by then.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(50)).await;
    app.sign_in("alice@example.com", PASSWORD)
        .await
        .expect("the right password after the window");
}

/// 40 guesses at once on 40 accounts (known or not) from one address: exactly 20 are checked.
async fn concurrent_wrong_guesses_from_one_address_get_at_most_the_addresses_limit_checked(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |config| {
        config.sign_in_limits.per_account = 5;
        config.sign_in_limits.per_address = 20;
    })
    .await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    let answers = at_once(
        &app,
        40,
        |index| format!("guess-{index}@example.com"),
        "wrong password",
        |_| "192.0.2.40".to_owned(),
    )
    .await;
    let tally = tally(answers);
    assert_eq!(
        (tally.checked_and_wrong, tally.rate_limited),
        (20, 20),
        "{tally:?}"
    );
    assert!(
        rate_limited_for(
            app.sign_in_from("alice@example.com", PASSWORD, "192.0.2.40")
                .await
        ) > 1
    );
}

/// The count is in the shared database: guesses spread over two replicas at once get 5 checks
/// between them, not 5 each.
async fn concurrent_wrong_passwords_on_two_replicas_get_at_most_the_limit_checked_between_them(
    backend: Backend,
) {
    let limits = |config: &mut crawbl_auth::Config| config.sign_in_limits.per_account = 5;
    let app = spawn_app_with(backend, limits).await;
    let replica = spawn_replica(&app, limits).await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    let alice = |_| "alice@example.com".to_owned();
    let (first, second) = tokio::join!(
        at_once(&app, 20, alice, "wrong password", |index| format!(
            "10.2.0.{index}"
        )),
        at_once(&replica, 20, alice, "wrong password", |index| format!(
            "10.2.1.{index}"
        )),
    );
    let tally = tally(first.into_iter().chain(second).collect());
    assert_eq!(
        (tally.checked_and_wrong, tally.rate_limited),
        (5, 35),
        "{tally:?}"
    );
}

/// With a limit of 5: 4 wrong, the right one, then 5 wrong are all checked (the success cleared
/// the account's count and gave back its own reservation), and only the next attempt waits.
async fn a_right_password_within_the_budget_clears_the_account_and_uses_none_of_it(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |config| {
        config.sign_in_limits.per_account = 5;
    })
    .await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    for _ in 0..4 {
        assert_fails_with(
            app.sign_in("alice@example.com", "wrong password").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    app.sign_in("alice@example.com", PASSWORD)
        .await
        .expect("the right password within the budget");
    for _ in 0..5 {
        assert_fails_with(
            app.sign_in("alice@example.com", "wrong password").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert!(rate_limited_for(app.sign_in("alice@example.com", PASSWORD).await) > 1);
}

/// An address's count is not cleared by a success (it counts everyone behind the address), but
/// a success gives back what it reserved: with a limit of 3, 2 failures, 5 successes and 1
/// failure are all answered, and only then is the address refused.
async fn right_passwords_use_none_of_the_addresses_budget(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.sign_in_limits.per_account = 5;
        config.sign_in_limits.per_address = 3;
    })
    .await;
    app.sign_up_ok("alice@example.com", "Alice").await;
    let address = "192.0.2.3";

    for index in 0..2 {
        assert_fails_with(
            app.sign_in_from(&format!("guess-{index}@example.com"), "wrong!", address)
                .await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    for _ in 0..5 {
        app.sign_in_from("alice@example.com", PASSWORD, address)
            .await
            .expect("a right password from the address");
    }
    assert_fails_with(
        app.sign_in_from("guess-2@example.com", "wrong!", address)
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert!(
        rate_limited_for(
            app.sign_in_from("alice@example.com", PASSWORD, address)
                .await
        ) > 1
    );
}

/// Every attempt holds a place in the budget while its password is checked, right or not (it
/// is not known yet). More right passwords at once than the budget: the first 3 (the limit) are
/// checked, the others are told to come back in a second (not at the window's end); afterwards
/// the whole budget is still there.
async fn concurrent_right_passwords_beyond_the_budget_are_told_to_retry_in_a_second(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |config| {
        config.sign_in_limits.per_account = 3;
    })
    .await;
    app.sign_up_ok("alice@example.com", "Alice").await;

    let answers = at_once(
        &app,
        10,
        |_| "alice@example.com".to_owned(),
        PASSWORD,
        |_| String::new(),
    )
    .await;
    let tally = tally(answers);
    assert!(tally.signed_in >= 3, "{tally:?}");
    assert_eq!(tally.checked_and_wrong, 0, "{tally:?}");
    assert_eq!(tally.signed_in + tally.rate_limited, 10, "{tally:?}");
    if tally.rate_limited > 0 {
        assert_eq!(tally.longest_retry_after, 1, "{tally:?}");
    }

    for _ in 0..3 {
        assert_fails_with(
            app.sign_in("alice@example.com", "wrong password").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert!(rate_limited_for(app.sign_in("alice@example.com", PASSWORD).await) > 1);
}
