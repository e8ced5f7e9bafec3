//! Workspaces and members: only members see a workspace, only owners manage members, a
//! workspace keeps an owner, and edges are told about every change.

use crawbl_proto::auth::v1::auth_change::Kind;
use crawbl_proto::auth::v1::{
    AddMemberRequest, CreateWorkspaceRequest, ListMembersRequest, ListMembershipsRequest, Member,
    MembershipChanged, RemoveMemberRequest, Workspace,
};
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_fails_with, next_change, spawn_app, user_id};

on_both_backends!(
    a_created_workspace_is_owned_by_its_creator_and_listed_among_theirs,
    owners_add_members_by_email_and_members_see_the_workspace,
    only_members_see_members_and_only_owners_manage_them,
    members_may_leave_but_the_last_owner_stays,
);

async fn create_workspace(
    app: &TestApp,
    actor: &str,
    name: &str,
) -> Result<Workspace, tonic::Status> {
    Ok(app
        .client
        .clone()
        .create_workspace(CreateWorkspaceRequest {
            actor_user_id: actor.to_owned(),
            name: name.to_owned(),
        })
        .await?
        .into_inner())
}

async fn memberships(app: &TestApp, user: &str) -> Vec<Workspace> {
    app.client
        .clone()
        .list_memberships(ListMembershipsRequest {
            user_id: user.to_owned(),
        })
        .await
        .expect("list memberships")
        .into_inner()
        .workspaces
}

async fn add(
    app: &TestApp,
    actor: &str,
    workspace: &str,
    email: &str,
    role: &str,
) -> Result<Member, tonic::Status> {
    Ok(app
        .client
        .clone()
        .add_member(AddMemberRequest {
            actor_user_id: actor.to_owned(),
            workspace_id: workspace.to_owned(),
            email: email.to_owned(),
            role: role.to_owned(),
        })
        .await?
        .into_inner())
}

async fn remove(
    app: &TestApp,
    actor: &str,
    workspace: &str,
    user: &str,
) -> Result<(), tonic::Status> {
    app.client
        .clone()
        .remove_member(RemoveMemberRequest {
            actor_user_id: actor.to_owned(),
            workspace_id: workspace.to_owned(),
            user_id: user.to_owned(),
        })
        .await?;
    Ok(())
}

async fn members(
    app: &TestApp,
    actor: &str,
    workspace: &str,
) -> Result<Vec<Member>, tonic::Status> {
    Ok(app
        .client
        .clone()
        .list_members(ListMembersRequest {
            actor_user_id: actor.to_owned(),
            workspace_id: workspace.to_owned(),
        })
        .await?
        .into_inner()
        .members)
}

fn membership_change(kind: Option<Kind>) -> MembershipChanged {
    match kind {
        Some(Kind::MembershipChanged(change)) => change,
        other => panic!("expected a membership change, got {other:?}"),
    }
}

async fn a_created_workspace_is_owned_by_its_creator_and_listed_among_theirs(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = user_id(&app.sign_up_ok("alice@example.com", "Alice").await);
    let mut changes = app.changes().await;

    let workspace = create_workspace(&app, &alice, "  Research ")
        .await
        .expect("create");
    assert_eq!(workspace.name, "Research");
    assert_eq!(workspace.role, "owner");

    let listed = memberships(&app, &alice).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1], workspace);
    let change = membership_change(next_change(&mut changes).await.kind);
    assert_eq!(
        (
            change.user_id.as_str(),
            change.workspace_id.as_str(),
            change.role.as_str()
        ),
        (alice.as_str(), workspace.id.as_str(), "owner")
    );
    for name in ["", " ", &"x".repeat(101)] {
        assert_fails_with(
            create_workspace(&app, &alice, name).await,
            Code::InvalidArgument,
            "INVALID_WORKSPACE_NAME",
        );
    }
}

async fn owners_add_members_by_email_and_members_see_the_workspace(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice_session = app.sign_up_ok("alice@example.com", "Alice").await;
    let alice = user_id(&alice_session);
    let bob = user_id(&app.sign_up_ok("bob@example.com", "Bob").await);
    let workspace = alice_session.workspaces[0].id.clone();
    let mut changes = app.changes().await;

    let member = add(&app, &alice, &workspace, " BOB@example.com ", "")
        .await
        .expect("add");
    assert_eq!(member.user.as_ref().expect("user").id, bob);
    assert_eq!(member.role, "member");

    assert!(
        memberships(&app, &bob)
            .await
            .iter()
            .any(|w| w.id == workspace && w.role == "member")
    );
    let listed = members(&app, &bob, &workspace).await.expect("members");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].role, "owner");
    let change = membership_change(next_change(&mut changes).await.kind);
    assert_eq!(
        (change.user_id, change.role),
        (bob.clone(), "member".to_owned())
    );

    assert_fails_with(
        add(&app, &alice, &workspace, "bob@example.com", "").await,
        Code::AlreadyExists,
        "ALREADY_MEMBER",
    );
    assert_fails_with(
        add(&app, &alice, &workspace, "nobody@example.com", "").await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_fails_with(
        add(&app, &alice, &workspace, "bob@example.com", "superuser").await,
        Code::InvalidArgument,
        "INVALID_ROLE",
    );
}

async fn only_members_see_members_and_only_owners_manage_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice_session = app.sign_up_ok("alice@example.com", "Alice").await;
    let alice = user_id(&alice_session);
    let bob = user_id(&app.sign_up_ok("bob@example.com", "Bob").await);
    let mallory = user_id(&app.sign_up_ok("mallory@example.com", "Mallory").await);
    app.sign_up_ok("carol@example.com", "Carol").await;
    let workspace = alice_session.workspaces[0].id.clone();
    add(&app, &alice, &workspace, "bob@example.com", "member")
        .await
        .expect("add bob");

    // A stranger: the workspace does not exist for them.
    assert_fails_with(
        members(&app, &mallory, &workspace).await,
        Code::NotFound,
        "WORKSPACE_NOT_FOUND",
    );
    assert_fails_with(
        add(&app, &mallory, &workspace, "carol@example.com", "").await,
        Code::NotFound,
        "WORKSPACE_NOT_FOUND",
    );
    assert_fails_with(
        remove(&app, &mallory, &workspace, &bob).await,
        Code::NotFound,
        "WORKSPACE_NOT_FOUND",
    );
    // A plain member sees, but does not manage.
    assert_fails_with(
        add(&app, &bob, &workspace, "carol@example.com", "").await,
        Code::PermissionDenied,
        "OWNER_REQUIRED",
    );
    assert_fails_with(
        remove(&app, &bob, &workspace, &alice).await,
        Code::PermissionDenied,
        "OWNER_REQUIRED",
    );
    // An admin manages agents (the edge's check), not members.
    let dave = user_id(&app.sign_up_ok("dave@example.com", "Dave").await);
    let added = add(&app, &alice, &workspace, "dave@example.com", "admin")
        .await
        .expect("add dave as an admin");
    assert_eq!(added.role, "admin");
    assert_fails_with(
        add(&app, &dave, &workspace, "carol@example.com", "").await,
        Code::PermissionDenied,
        "OWNER_REQUIRED",
    );
    assert_fails_with(
        remove(&app, &dave, &workspace, &bob).await,
        Code::PermissionDenied,
        "OWNER_REQUIRED",
    );
    assert_fails_with(
        members(&app, &alice, "no-such-workspace").await,
        Code::NotFound,
        "WORKSPACE_NOT_FOUND",
    );
}

async fn members_may_leave_but_the_last_owner_stays(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice_session = app.sign_up_ok("alice@example.com", "Alice").await;
    let alice = user_id(&alice_session);
    let bob = user_id(&app.sign_up_ok("bob@example.com", "Bob").await);
    let carol = user_id(&app.sign_up_ok("carol@example.com", "Carol").await);
    let workspace = alice_session.workspaces[0].id.clone();
    add(&app, &alice, &workspace, "bob@example.com", "")
        .await
        .expect("add bob");
    add(&app, &alice, &workspace, "carol@example.com", "owner")
        .await
        .expect("add carol");
    let mut changes = app.changes().await;

    remove(&app, &bob, &workspace, &bob)
        .await
        .expect("bob leaves");
    let change = membership_change(next_change(&mut changes).await.kind);
    assert_eq!(
        (change.user_id.as_str(), change.role.as_str()),
        (bob.as_str(), "")
    );
    assert!(
        !memberships(&app, &bob)
            .await
            .iter()
            .any(|w| w.id == workspace)
    );
    assert_fails_with(
        remove(&app, &alice, &workspace, &bob).await,
        Code::NotFound,
        "MEMBER_NOT_FOUND",
    );
    // Bob no longer sees the workspace at all.
    assert_fails_with(
        members(&app, &bob, &workspace).await,
        Code::NotFound,
        "WORKSPACE_NOT_FOUND",
    );

    // Two owners: one may remove the other, but not the last one.
    remove(&app, &carol, &workspace, &alice)
        .await
        .expect("carol removes alice");
    assert_fails_with(
        remove(&app, &carol, &workspace, &carol).await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
}
