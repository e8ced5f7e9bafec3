//! The user's own profile, and the service credential every internal call needs.

use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::auth::v1::{GetSigningKeysRequest, GetUserRequest, UpdateUserRequest};
use tonic::Code;

use crate::helpers::{Backend, assert_fails_with, spawn_app, user_id};

on_both_backends!(
    a_user_reads_and_renames_themselves,
    calls_without_the_service_credential_are_refused_but_health_is_open,
);

async fn a_user_reads_and_renames_themselves(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = user_id(&app.sign_up_ok("alice@example.com", "Alice").await);
    let mut client = app.client.clone();

    let user = client
        .get_user(GetUserRequest {
            user_id: alice.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        (user.email.as_str(), user.display_name.as_str()),
        ("alice@example.com", "Alice")
    );

    let renamed = client
        .update_user(UpdateUserRequest {
            user_id: alice.clone(),
            display_name: Some("  Alice L. ".to_owned()),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(renamed.display_name, "Alice L.");
    let unchanged = client
        .update_user(UpdateUserRequest {
            user_id: alice.clone(),
            display_name: None,
        })
        .await
        .expect("empty update")
        .into_inner();
    assert_eq!(unchanged, renamed);

    let blank = client
        .update_user(UpdateUserRequest {
            user_id: alice,
            display_name: Some(" ".to_owned()),
        })
        .await
        .map(tonic::Response::into_inner);
    assert_fails_with(blank, Code::InvalidArgument, "INVALID_DISPLAY_NAME");
    let missing = client
        .get_user(GetUserRequest {
            user_id: "nobody".to_owned(),
        })
        .await
        .map(tonic::Response::into_inner);
    assert_fails_with(missing, Code::NotFound, "USER_NOT_FOUND");
}

async fn calls_without_the_service_credential_are_refused_but_health_is_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let channel = crawbl_infra::grpc::channel_without_credential(&app.address).expect("channel");

    let anonymous = AuthServiceClient::new(channel.clone())
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .map(tonic::Response::into_inner);
    assert_fails_with(
        anonymous,
        Code::Unauthenticated,
        "SERVICE_CREDENTIAL_REQUIRED",
    );

    let wrong =
        crawbl_infra::grpc::ServiceToken::new("not-the-service-token-at-all").expect("token");
    let impostor = crawbl_infra::grpc::channel_with_token(&app.address, wrong).expect("channel");
    let refused = AuthServiceClient::new(impostor)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .map(tonic::Response::into_inner);
    assert_fails_with(
        refused,
        Code::Unauthenticated,
        "SERVICE_CREDENTIAL_REQUIRED",
    );

    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "crawbl.auth.v1.AuthService".to_owned(),
        })
        .await
        .expect("health needs no credential")
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
