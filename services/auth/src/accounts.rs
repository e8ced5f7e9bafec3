//! Deleting an account (`DELETE /v1/users/me`). The caller (the edge) first asks which workspaces
//! the user alone owns ([`Auth::sole_owned_workspaces`]), has the conversation service delete
//! their data, then calls [`Auth::delete_user`], which deletes everything auth keeps of the user
//! in one transaction, last: until it commits the account is whole and a retry redoes it all; once
//! it has, nothing of the user is left to retry. See docs/decisions.md, "Account deletion".

use std::time::Duration;

use crate::api_keys::REVOCATION_RETENTION;
use crate::db::{accounts, devices, users, workspaces};
use crate::domain::{Revocation, Revoked};
use crate::error::AuthError;
use crate::keys::CLOCK_SKEW;
use crate::service::{Auth, millis, now_millis};
use crate::tokens;

/// What deleting an account deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletedUser {
    /// `None`: there was no such user (already deleted); nothing was done.
    pub user_id: Option<String>,
    /// The workspaces deleted with it.
    pub deleted_workspaces: Vec<String>,
    /// `(user id, workspace id)` of the other members' memberships gone with those workspaces.
    pub removed_memberships: Vec<(String, String)>,
    /// Until when (Unix ms) edges must refuse the user's tokens.
    pub revoked_until: i64,
}

impl Auth {
    /// The workspaces `user_id` owns with no other owner: deleting the account deletes them.
    pub async fn sole_owned_workspaces(&self, user_id: &str) -> Result<Vec<String>, AuthError> {
        Ok(accounts::sole_owned_workspaces(&self.pool, user_id).await?)
    }

    /// Deletes the user, their sessions (and refresh tokens), API keys and memberships, and the
    /// workspaces of `purged` (whose data the caller deleted) that they still own, with every
    /// membership of those; records a tombstone so edges keep refusing the user's access tokens
    /// until the last one has expired. All in one transaction, then announced: every credential
    /// of the user revoked, the other members' memberships gone.
    ///
    /// [`AuthError::WorkspacesChanged`], with nothing deleted, when the user now solely owns a
    /// workspace not in `purged`. An unknown user (deleted already) is no error: nothing is done.
    #[tracing::instrument(name = "delete_user", skip_all)]
    pub async fn delete_user(
        &self,
        user_id: &str,
        purged: &[String],
    ) -> Result<DeletedUser, AuthError> {
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        if !accounts::lock_user(&mut *transaction, user_id).await? {
            return Ok(DeletedUser::default());
        }
        let user = users::find_user(&mut *transaction, user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        // The same row locks membership changes take, in one order: no owner can be added to or
        // leave these workspaces while this decides which of them go.
        let owned = accounts::owned_workspaces(&mut *transaction, user_id).await?;
        for workspace_id in &owned {
            workspaces::lock_workspace(&mut *transaction, workspace_id).await?;
        }
        let sole_owned = accounts::sole_owned_workspaces(&mut *transaction, user_id).await?;
        if let Some(unpurged) = sole_owned.iter().find(|id| !purged.contains(id)) {
            tracing::info!(
                user_id,
                workspace_id = %unpurged,
                "account deletion: a workspace became solely owned since it was listed"
            );
            return Err(AuthError::WorkspacesChanged);
        }
        // A purged workspace that gained another owner since it was listed goes too: its data
        // already has.
        let doomed: Vec<String> = owned.into_iter().filter(|id| purged.contains(id)).collect();
        let mut removed_memberships = Vec::new();
        for workspace_id in &doomed {
            for member in accounts::other_members(&mut *transaction, workspace_id, user_id).await? {
                removed_memberships.push((member, workspace_id.clone()));
            }
            accounts::delete_workspace(&mut transaction, workspace_id).await?;
        }
        // Their push devices and mutes: nothing is sent to the account's devices any more.
        devices::delete_of_user(&mut transaction, user_id).await?;
        accounts::delete_user(&mut transaction, user_id, &user.email).await?;
        accounts::insert_tombstone(&mut *transaction, user_id, now).await?;
        transaction.commit().await?;

        let revoked_until = tokens::after(now, self.user_revocation_window());
        tracing::info!(
            user_id,
            workspaces = doomed.len(),
            members_removed = removed_memberships.len(),
            "account deleted"
        );
        self.changes
            .revoked(Revocation {
                revoked: Revoked::User,
                user_id: user_id.to_owned(),
                until: revoked_until,
            })
            .await;
        for (member, workspace_id) in &removed_memberships {
            self.changes.membership(member, workspace_id, None).await;
        }
        Ok(DeletedUser {
            user_id: Some(user_id.to_owned()),
            deleted_workspaces: doomed,
            removed_memberships,
            revoked_until,
        })
    }

    /// Users deleted recently enough that a token of theirs may still be valid or cached.
    pub(crate) async fn deleted_user_revocations(
        &self,
        now: i64,
    ) -> Result<Vec<Revocation>, AuthError> {
        let window = self.user_revocation_window();
        Ok(
            accounts::deleted_since(&self.pool, now.saturating_sub(millis(window)))
                .await?
                .into_iter()
                .map(|(user_id, deleted_at)| Revocation {
                    revoked: Revoked::User,
                    user_id,
                    until: tokens::after(deleted_at, window),
                })
                .collect(),
        )
    }

    /// Forgets tombstones no edge needs any more.
    pub async fn prune_deleted_users(&self) -> Result<(), AuthError> {
        let cutoff = now_millis().saturating_sub(millis(self.user_revocation_window()));
        accounts::prune_tombstones(&self.pool, cutoff).await?;
        Ok(())
    }

    /// How long after an account's deletion one of its access tokens may still be unexpired, or
    /// one of its API keys cached by an edge.
    fn user_revocation_window(&self) -> Duration {
        self.lifetimes
            .access
            .saturating_add(CLOCK_SKEW)
            .max(REVOCATION_RETENTION)
    }
}
