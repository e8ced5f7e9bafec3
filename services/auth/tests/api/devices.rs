//! Push devices and mutes: registration is checked and idempotent per token, a token moves to
//! the user who registers it last, revoking the session (refresh-token reuse) removes its
//! devices, and push targets leave out muted members and non-members.

use crawbl_proto::auth::v1::{
    AddMemberRequest, DeleteDeviceRequest, ListDevicesRequest, ListPushTargetsRequest,
    RegisterDeviceRequest, SetPushMuteRequest,
};
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_fails_with, spawn_app, user_id};

on_both_backends!(devices_follow_their_session_and_targets_leave_out_muted_members);

fn fcm(token: &str) -> String {
    format!("\"{token}\"")
}

async fn register(
    app: &TestApp,
    user: &str,
    session: &str,
    platform: &str,
    target_json: &str,
) -> Result<String, tonic::Status> {
    let registered = app
        .client
        .clone()
        .register_device(RegisterDeviceRequest {
            actor_user_id: user.to_owned(),
            session_id: session.to_owned(),
            platform: platform.to_owned(),
            target_json: target_json.to_owned(),
            app_id: None,
        })
        .await?
        .into_inner();
    Ok(registered.device.expect("a device").id)
}

async fn devices_of(app: &TestApp, user: &str) -> Vec<String> {
    app.client
        .clone()
        .list_devices(ListDevicesRequest {
            actor_user_id: user.to_owned(),
        })
        .await
        .expect("list devices")
        .into_inner()
        .devices
        .into_iter()
        .map(|device| device.id)
        .collect()
}

async fn targets(app: &TestApp, workspace: &str, conversation: &str) -> Vec<String> {
    let mut users: Vec<String> = app
        .client
        .clone()
        .list_push_targets(ListPushTargetsRequest {
            workspace_id: workspace.to_owned(),
            conversation_id: conversation.to_owned(),
        })
        .await
        .expect("list push targets")
        .into_inner()
        .targets
        .into_iter()
        .map(|target| target.user_id)
        .collect();
    users.sort();
    users
}

async fn mute(app: &TestApp, user: &str, conversation: &str, muted: bool) {
    app.client
        .clone()
        .set_push_mute(SetPushMuteRequest {
            actor_user_id: user.to_owned(),
            conversation_id: conversation.to_owned(),
            muted,
        })
        .await
        .expect("mute");
}

async fn devices_follow_their_session_and_targets_leave_out_muted_members(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.sign_up_ok("owner@example.com", "Owner").await;
    let member = app.sign_up_ok("member@example.com", "Member").await;
    let outsider = app.sign_up_ok("outsider@example.com", "Outsider").await;
    let (owner_id, member_id, outsider_id) =
        (user_id(&owner), user_id(&member), user_id(&outsider));
    let workspace = owner.workspaces[0].id.clone();
    app.client
        .clone()
        .add_member(AddMemberRequest {
            actor_user_id: owner_id.clone(),
            workspace_id: workspace.clone(),
            email: "member@example.com".to_owned(),
            role: "member".to_owned(),
        })
        .await
        .expect("add the member");

    // Checked, with stable codes.
    let refused = register(&app, &owner_id, &owner.session_id, "sms", &fcm("t")).await;
    assert_fails_with(refused, Code::InvalidArgument, "UNKNOWN_PLATFORM");
    let refused = register(&app, &owner_id, &owner.session_id, "apns", &fcm("xyz")).await;
    assert_fails_with(refused, Code::FailedPrecondition, "INVALID_DEVICE_TOKEN");
    let refused = register(&app, &owner_id, &owner.session_id, "webpush", "null").await;
    assert_fails_with(refused, Code::FailedPrecondition, "INVALID_SUBSCRIPTION");

    // Idempotent per token; moved to whoever registers it last.
    let owner_device = register(&app, &owner_id, &owner.session_id, "fcm", &fcm("owner"))
        .await
        .expect("register");
    let again = register(&app, &owner_id, &owner.session_id, "fcm", &fcm("owner"))
        .await
        .expect("register again");
    assert_eq!(owner_device, again);
    let shared = register(
        &app,
        &outsider_id,
        &outsider.session_id,
        "fcm",
        &fcm("shared"),
    )
    .await
    .expect("register");
    let moved = register(&app, &member_id, &member.session_id, "fcm", &fcm("shared"))
        .await
        .expect("register");
    assert_eq!(shared, moved);
    assert!(devices_of(&app, &outsider_id).await.is_empty());
    assert_eq!(
        devices_of(&app, &member_id).await,
        std::slice::from_ref(&moved)
    );
    register(
        &app,
        &outsider_id,
        &outsider.session_id,
        "fcm",
        &fcm("outsider"),
    )
    .await
    .expect("register");

    // Only another user's own device can be deleted by them.
    let refused = app
        .client
        .clone()
        .delete_device(DeleteDeviceRequest {
            actor_user_id: outsider_id.clone(),
            device_id: owner_device.clone(),
        })
        .await;
    assert_fails_with(refused, Code::NotFound, "DEVICE_NOT_FOUND");

    // Targets: members only, less who muted the conversation or everything.
    let mut members = vec![owner_id.clone(), member_id.clone()];
    members.sort();
    assert_eq!(targets(&app, &workspace, "c1").await, members);
    mute(&app, &member_id, "c1", true).await;
    assert_eq!(
        targets(&app, &workspace, "c1").await,
        std::slice::from_ref(&owner_id)
    );
    assert_eq!(targets(&app, &workspace, "c2").await, members);
    mute(&app, &owner_id, "", true).await;
    assert!(targets(&app, &workspace, "c1").await.is_empty());
    mute(&app, &owner_id, "", false).await;
    mute(&app, &member_id, "c1", false).await;
    assert_eq!(targets(&app, &workspace, "c1").await, members);

    // A reused refresh token revokes the session, and its devices go with it.
    app.refresh(&member.refresh_token).await.expect("refresh");
    let reused = app.refresh(&member.refresh_token).await;
    assert_fails_with(reused, Code::Unauthenticated, "REFRESH_TOKEN_REUSED");
    assert!(devices_of(&app, &member_id).await.is_empty());

    // Logging out removes the session's devices.
    app.logout(&owner.access_token).await.expect("logout");
    assert!(devices_of(&app, &owner_id).await.is_empty());
    // And that session registers nothing any more.
    let refused = register(&app, &owner_id, &owner.session_id, "fcm", &fcm("late")).await;
    assert_fails_with(refused, Code::Unauthenticated, "INVALID_TOKEN");
}
