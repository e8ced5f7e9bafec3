//! Users' profiles, workspaces and membership. Only members see a workspace (anyone else gets
//! [`AuthError::WorkspaceNotFound`], so ids do not leak); only owners add and remove others;
//! members may remove themselves; a workspace always keeps one owner.

use crate::db::{users, workspaces};
use crate::domain::{DisplayName, Email, Member, Membership, Role, User, WorkspaceName};
use crate::error::AuthError;
use crate::service::{Auth, now_millis};

impl Auth {
    pub async fn get_user(&self, user_id: &str) -> Result<User, AuthError> {
        users::find_user(&self.pool, user_id)
            .await?
            .ok_or(AuthError::UserNotFound)
    }

    /// Changes what is given; returns the user as it now is.
    pub async fn update_user(
        &self,
        user_id: &str,
        display_name: Option<&str>,
    ) -> Result<User, AuthError> {
        if let Some(display_name) = display_name {
            let display_name = DisplayName::parse(display_name)?;
            if !users::update_display_name(&self.pool, user_id, display_name.as_str()).await? {
                return Err(AuthError::UserNotFound);
            }
        }
        self.get_user(user_id).await
    }

    pub async fn list_memberships(&self, user_id: &str) -> Result<Vec<Membership>, AuthError> {
        Ok(workspaces::list_memberships(&self.pool, user_id).await?)
    }

    /// A new workspace owned by the actor. Its agents are made by the conversation service on
    /// first use.
    #[tracing::instrument(name = "create_workspace", skip_all)]
    pub async fn create_workspace(
        &self,
        actor_user_id: &str,
        name: &str,
    ) -> Result<Membership, AuthError> {
        let name = WorkspaceName::parse(name)?;
        let now = now_millis();
        let workspace = Membership {
            workspace_id: uuid::Uuid::now_v7().to_string(),
            workspace_name: name.as_str().to_owned(),
            role: Role::Owner.as_str().to_owned(),
        };
        let mut transaction = self.pool.begin().await?;
        if users::find_user(&mut *transaction, actor_user_id)
            .await?
            .is_none()
        {
            return Err(AuthError::UserNotFound);
        }
        workspaces::insert_workspace(
            &mut *transaction,
            &workspace.workspace_id,
            &workspace.workspace_name,
            now,
        )
        .await?;
        workspaces::insert_membership(
            &mut *transaction,
            &workspace.workspace_id,
            actor_user_id,
            Role::Owner,
            now,
        )
        .await?;
        transaction.commit().await?;
        tracing::info!(user_id = actor_user_id, workspace_id = %workspace.workspace_id, "workspace created");
        self.changes
            .membership(actor_user_id, &workspace.workspace_id, Some(Role::Owner))
            .await;
        Ok(workspace)
    }

    pub async fn list_members(
        &self,
        actor_user_id: &str,
        workspace_id: &str,
    ) -> Result<Vec<Member>, AuthError> {
        if workspaces::find_role(&self.pool, workspace_id, actor_user_id)
            .await?
            .is_none()
        {
            return Err(AuthError::WorkspaceNotFound);
        }
        Ok(workspaces::list_members(&self.pool, workspace_id).await?)
    }

    /// Adds the user with `email`; only owners may.
    #[tracing::instrument(name = "add_member", skip_all)]
    pub async fn add_member(
        &self,
        actor_user_id: &str,
        workspace_id: &str,
        email: &str,
        role: &str,
    ) -> Result<Member, AuthError> {
        let role = Role::parse(role)?;
        let email = Email::parse(email)?;
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        if !workspaces::lock_workspace(&mut *transaction, workspace_id).await? {
            return Err(AuthError::WorkspaceNotFound);
        }
        match workspaces::find_role(&mut *transaction, workspace_id, actor_user_id).await? {
            None => return Err(AuthError::WorkspaceNotFound),
            Some(Role::Member | Role::Admin) => return Err(AuthError::OwnerRequired),
            Some(Role::Owner) => {}
        }
        let user_id = users::find_user_id_by_email(&mut *transaction, email.as_str())
            .await?
            .ok_or(AuthError::UserNotFound)?;
        workspaces::insert_membership(&mut *transaction, workspace_id, &user_id, role, now)
            .await
            .map_err(|error| {
                if crate::db::is_unique_violation(&error) {
                    AuthError::AlreadyMember
                } else {
                    error.into()
                }
            })?;
        let user = users::find_user(&mut *transaction, &user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        transaction.commit().await?;
        tracing::info!(workspace_id, user_id = %user.id, by = actor_user_id, "member added");
        self.changes
            .membership(&user.id, workspace_id, Some(role))
            .await;
        Ok(Member {
            user,
            role: role.as_str().to_owned(),
            joined_at: now,
        })
    }

    /// Removes `user_id` from the workspace: owners remove anyone, members only themselves, and
    /// the last owner cannot leave.
    #[tracing::instrument(name = "remove_member", skip_all)]
    pub async fn remove_member(
        &self,
        actor_user_id: &str,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<(), AuthError> {
        let mut transaction = self.pool.begin().await?;
        if !workspaces::lock_workspace(&mut *transaction, workspace_id).await? {
            return Err(AuthError::WorkspaceNotFound);
        }
        let actor_role = workspaces::find_role(&mut *transaction, workspace_id, actor_user_id)
            .await?
            .ok_or(AuthError::WorkspaceNotFound)?;
        if actor_user_id != user_id && actor_role != Role::Owner {
            return Err(AuthError::OwnerRequired);
        }
        let target_role = workspaces::find_role(&mut *transaction, workspace_id, user_id)
            .await?
            .ok_or(AuthError::MemberNotFound)?;
        if target_role == Role::Owner
            && workspaces::count_owners(&mut *transaction, workspace_id).await? <= 1
        {
            return Err(AuthError::LastOwner);
        }
        workspaces::delete_membership(&mut *transaction, workspace_id, user_id).await?;
        transaction.commit().await?;
        tracing::info!(workspace_id, user_id, by = actor_user_id, "member removed");
        self.changes.membership(user_id, workspace_id, None).await;
        Ok(())
    }
}
