//! Account deletion: which workspaces go with the account, the refusal when they changed since
//! they were listed, what is announced, what the revocation list keeps, and that deleting twice
//! is harmless and the email free again.

use crawbl_proto::auth::v1::auth_change::Kind;
use crawbl_proto::auth::v1::revocation::Subject;
use crawbl_proto::auth::v1::{
    AddMemberRequest, CreateWorkspaceRequest, DeleteUserRequest, DeletedUser, ListMembersRequest,
    ListMembershipsRequest, ListRevocationsRequest, ListSoleOwnedWorkspacesRequest,
    MembershipChanged,
};
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_fails_with, next_change, spawn_app, user_id};

on_both_backends!(
    deleting_a_user_deletes_the_workspaces_they_alone_own_and_revokes_everything_of_theirs,
);

async fn sole_owned(app: &TestApp, user: &str) -> Vec<String> {
    app.client
        .clone()
        .list_sole_owned_workspaces(ListSoleOwnedWorkspacesRequest {
            user_id: user.to_owned(),
        })
        .await
        .expect("list sole-owned workspaces")
        .into_inner()
        .workspace_ids
}

async fn delete_user(
    app: &TestApp,
    user: &str,
    purged: &[String],
) -> Result<DeletedUser, tonic::Status> {
    Ok(app
        .client
        .clone()
        .delete_user(DeleteUserRequest {
            user_id: user.to_owned(),
            purged_workspace_ids: purged.to_vec(),
        })
        .await?
        .into_inner())
}

async fn add(app: &TestApp, actor: &str, workspace: &str, email: &str, role: &str) {
    app.client
        .clone()
        .add_member(AddMemberRequest {
            actor_user_id: actor.to_owned(),
            workspace_id: workspace.to_owned(),
            email: email.to_owned(),
            role: role.to_owned(),
        })
        .await
        .expect("add a member");
}

async fn membership_ids(app: &TestApp, user: &str) -> Vec<String> {
    app.client
        .clone()
        .list_memberships(ListMembershipsRequest {
            user_id: user.to_owned(),
        })
        .await
        .expect("list memberships")
        .into_inner()
        .workspaces
        .into_iter()
        .map(|workspace| workspace.id)
        .collect()
}

async fn deleting_a_user_deletes_the_workspaces_they_alone_own_and_revokes_everything_of_theirs(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let alice = app.sign_up_ok("alice@example.com", "Alice").await;
    let bob = app.sign_up_ok("bob@example.com", "Bob").await;
    let carol = app.sign_up_ok("carol@example.com", "Carol").await;
    let (alice_id, bob_id, carol_id) = (user_id(&alice), user_id(&bob), user_id(&carol));
    let own = alice.workspaces[0].id.clone();
    let shared = bob.workspaces[0].id.clone();
    let second = app
        .client
        .clone()
        .create_workspace(CreateWorkspaceRequest {
            actor_user_id: alice_id.clone(),
            name: "Second".to_owned(),
        })
        .await
        .expect("create a workspace")
        .into_inner()
        .id;
    add(&app, &alice_id, &own, "carol@example.com", "admin").await;
    add(&app, &bob_id, &shared, "alice@example.com", "owner").await;

    let mut expected = vec![own.clone(), second.clone()];
    expected.sort();
    assert_eq!(sole_owned(&app, &alice_id).await, expected);
    assert_eq!(
        sole_owned(&app, &carol_id).await,
        [carol.workspaces[0].id.clone()]
    );

    // A workspace the caller has not purged (it became hers alone in between): nothing happens.
    assert_fails_with(
        delete_user(&app, &alice_id, std::slice::from_ref(&own)).await,
        Code::Aborted,
        "WORKSPACES_CHANGED",
    );
    app.verify_token(&alice.access_token)
        .await
        .expect("still signed in");
    assert_eq!(membership_ids(&app, &carol_id).await.len(), 2);

    let mut changes = app.changes().await;
    let deleted = delete_user(&app, &alice_id, &expected)
        .await
        .expect("delete the user");
    assert_eq!(deleted.user_id, alice_id);
    assert_eq!(deleted.deleted_workspace_ids, expected);
    assert_eq!(
        deleted.removed_memberships,
        [MembershipChanged {
            user_id: carol_id.clone(),
            workspace_id: own.clone(),
            role: String::new(),
        }]
    );
    match next_change(&mut changes).await.kind {
        Some(Kind::Revoked(revocation)) => {
            assert_eq!(
                revocation.subject,
                Some(Subject::AllOfUser(alice_id.clone()))
            );
            assert_eq!(revocation.until, deleted.revoked_until);
        }
        other => panic!("expected the user's revocation, got {other:?}"),
    }
    match next_change(&mut changes).await.kind {
        Some(Kind::MembershipChanged(change)) => {
            assert_eq!(change, deleted.removed_memberships[0]);
        }
        other => panic!("expected Carol's lost membership, got {other:?}"),
    }

    // Every credential of hers is dead; her workspaces are gone; Bob's stays, without her.
    assert_fails_with(
        app.verify_token(&alice.access_token).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    assert_fails_with(
        app.refresh(&alice.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    assert_eq!(
        membership_ids(&app, &carol_id).await,
        [carol.workspaces[0].id.clone()]
    );
    assert_eq!(
        membership_ids(&app, &bob_id).await,
        std::slice::from_ref(&shared)
    );
    let members = app
        .client
        .clone()
        .list_members(ListMembersRequest {
            actor_user_id: bob_id.clone(),
            workspace_id: shared.clone(),
        })
        .await
        .expect("list members")
        .into_inner()
        .members;
    assert_eq!(members.len(), 1);
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
            .any(|r| r.subject == Some(Subject::AllOfUser(alice_id.clone()))
                && r.until == deleted.revoked_until),
        "{listed:?}"
    );

    // Again: nothing left to do, nothing announced.
    let again = delete_user(&app, &alice_id, &expected)
        .await
        .expect("delete again");
    assert_eq!(again, DeletedUser::default());
    let quiet = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        next_change(&mut changes),
    )
    .await;
    assert!(quiet.is_err(), "a second announcement: {quiet:?}");

    // The email signs up again, as someone new.
    let anew = app.sign_up_ok("alice@example.com", "Alice").await;
    assert_ne!(user_id(&anew), alice_id);
    assert_eq!(anew.workspaces.len(), 1);
    assert!(!expected.contains(&anew.workspaces[0].id));
}
