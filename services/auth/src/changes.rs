//! Announcing committed changes that edges must apply at once (revocations, membership), on the
//! `crawbl:auth` channel (Redis, or in-process in the embedded default).
//!
//! Publishing happens after the change commits and is best effort: a lost announcement is made
//! good by the edges' periodic resync (`ListRevocations`, membership cache expiry).

use crawbl_infra::notify::Notifier;
use crawbl_proto::auth::v1 as pb;
use prost::Message as _;

use crate::domain::{Revocation, Role};

/// The channel edges subscribe to.
pub const CHANNEL: &str = "crawbl:auth";

#[derive(Clone)]
pub struct Changes {
    notifier: Notifier,
}

impl Changes {
    pub fn new(notifier: Notifier) -> Self {
        Self { notifier }
    }

    pub async fn revoked(&self, revocation: Revocation) {
        self.publish(pb::auth_change::Kind::Revoked(revocation.into()))
            .await;
    }

    /// `role` `None`: the user is no longer a member.
    pub async fn membership(&self, user_id: &str, workspace_id: &str, role: Option<Role>) {
        let change = pb::MembershipChanged {
            user_id: user_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            role: role.map(Role::as_str).unwrap_or_default().to_owned(),
        };
        self.publish(pb::auth_change::Kind::MembershipChanged(change))
            .await;
    }

    async fn publish(&self, kind: pb::auth_change::Kind) {
        let change = pb::AuthChange { kind: Some(kind) };
        if let Err(error) = self.notifier.publish(change.encode_to_vec()).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot announce an auth change; edges pick it up at their next resync"
            );
        }
    }
}

impl From<Revocation> for pb::Revocation {
    fn from(revocation: Revocation) -> Self {
        use crate::domain::Revoked;
        let subject = match revocation.revoked {
            Revoked::Session { session_id } => pb::revocation::Subject::SessionId(session_id),
            Revoked::ApiKey { api_key_id } => pb::revocation::Subject::ApiKeyId(api_key_id),
            Revoked::User => pb::revocation::Subject::AllOfUser(revocation.user_id.clone()),
        };
        Self {
            subject: Some(subject),
            user_id: revocation.user_id,
            until: revocation.until,
        }
    }
}
