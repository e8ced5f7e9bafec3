//! Workspaces and who belongs to them.

use sqlx::{Any, Executor};

use crate::domain::{Member, Membership, Role, User};

pub async fn insert_workspace<'c>(
    executor: impl Executor<'c, Database = Any>,
    id: &str,
    name: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(executor)
        .await?;
    Ok(())
}

/// Fails with a unique violation when the user already belongs to the workspace.
pub async fn insert_membership<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
    role: Role,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO memberships (workspace_id, user_id, role, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(workspace_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(executor)
    .await?;
    Ok(())
}

/// Takes the workspace's row lock on Postgres (a no-op update), so membership changes of one
/// workspace run one at a time and "keep one owner" cannot be raced; SQLite serializes writers
/// anyway. False when the workspace does not exist.
pub async fn lock_workspace<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE workspaces SET name = name WHERE id = $1")
        .bind(workspace_id)
        .execute(executor)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The user's role in the workspace, or `None` when they are not a member.
pub async fn find_role<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
) -> sqlx::Result<Option<Role>> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .fetch_optional(executor)
            .await?;
    Ok(role.as_deref().map(Role::from_stored))
}

pub async fn count_owners<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'",
    )
    .bind(workspace_id)
    .fetch_one(executor)
    .await
}

pub async fn delete_membership<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
        .bind(workspace_id)
        .bind(user_id)
        .execute(executor)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Every workspace the user belongs to, oldest membership first.
pub async fn list_memberships<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<Membership>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT w.id, w.name, m.role
         FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
         WHERE m.user_id = $1
         ORDER BY m.created_at, w.id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(workspace_id, workspace_name, role)| Membership {
            workspace_id,
            workspace_name,
            role,
        })
        .collect())
}

/// The workspace's members, earliest first.
pub async fn list_members<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
) -> sqlx::Result<Vec<Member>> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT u.id, u.email, u.display_name, m.role, m.created_at
         FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.workspace_id = $1
         ORDER BY m.created_at, u.id",
    )
    .bind(workspace_id)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, email, display_name, role, joined_at)| Member {
            user: User {
                id,
                email,
                display_name,
            },
            role,
            joined_at,
        })
        .collect())
}
