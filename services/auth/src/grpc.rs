//! The `crawbl.auth.v1.AuthService` gRPC API over [`Auth`].

use crawbl_proto::auth::v1 as pb;
use crawbl_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use tonic::{Request, Response, Status};

use crate::accounts::DeletedUser;
use crate::devices::{Device, PushSettings};
use crate::domain::{
    ApiKey, ApiKeyIdentity, CreatedApiKey, IssuedSession, Member, Membership, Principal, User,
};
use crate::error::AuthError;
use crate::service::Auth;
use crate::tokens;

pub struct AuthGrpc {
    auth: Auth,
}

impl AuthGrpc {
    /// The service, ready to hand to `crawbl_infra::grpc::serve`.
    pub fn server(auth: Auth) -> AuthServiceServer<Self> {
        AuthServiceServer::new(Self { auth })
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U: From<T>>(result: Result<T, AuthError>) -> Reply<U> {
    Ok(Response::new(result?.into()))
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn sign_up(&self, request: Request<pb::SignUpRequest>) -> Reply<pb::Session> {
        let request = request.into_inner();
        reply(
            self.auth
                .sign_up(&request.email, &request.password, &request.display_name)
                .await,
        )
    }

    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> Reply<pb::Session> {
        let request = request.into_inner();
        reply(
            self.auth
                .sign_in(&request.email, &request.password, &request.client_address)
                .await,
        )
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Reply<pb::Session> {
        reply(self.auth.refresh(&request.get_ref().refresh_token).await)
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        let (session_id, user_id) = self.auth.logout(&request.get_ref().access_token).await?;
        Ok(Response::new(pb::LogoutResponse {
            session_id,
            user_id,
        }))
    }

    async fn verify_token(&self, request: Request<pb::VerifyTokenRequest>) -> Reply<pb::Principal> {
        reply(self.auth.verify_token(&request.get_ref().token).await)
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> Reply<pb::SigningKeys> {
        // Read afresh: another replica may have rotated since this one last looked.
        self.auth.keys().reload().await.map_err(AuthError::from)?;
        Ok(Response::new(signing_keys(&self.auth)))
    }

    async fn rotate_signing_key(
        &self,
        _request: Request<pb::RotateSigningKeyRequest>,
    ) -> Reply<pb::SigningKeys> {
        self.auth.keys().rotate().await.map_err(AuthError::from)?;
        Ok(Response::new(signing_keys(&self.auth)))
    }

    async fn list_revocations(
        &self,
        _request: Request<pb::ListRevocationsRequest>,
    ) -> Reply<pb::Revocations> {
        let revocations = self.auth.list_revocations().await?;
        Ok(Response::new(pb::Revocations {
            revocations: revocations.into_iter().map(Into::into).collect(),
        }))
    }

    async fn verify_api_key(
        &self,
        request: Request<pb::VerifyApiKeyRequest>,
    ) -> Reply<pb::ApiKeyIdentity> {
        reply(self.auth.verify_api_key(&request.get_ref().key).await)
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreatedApiKey> {
        let request = request.into_inner();
        reply(
            self.auth
                .create_api_key(&request.actor_user_id, &request.name)
                .await,
        )
    }

    async fn list_api_keys(&self, request: Request<pb::ListApiKeysRequest>) -> Reply<pb::ApiKeys> {
        let keys = self
            .auth
            .list_api_keys(&request.get_ref().actor_user_id)
            .await?;
        Ok(Response::new(pb::ApiKeys {
            api_keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Reply<pb::RevokeApiKeyResponse> {
        let request = request.into_inner();
        self.auth
            .revoke_api_key(&request.actor_user_id, &request.api_key_id)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::User> {
        reply(self.auth.get_user(&request.get_ref().user_id).await)
    }

    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Reply<pb::User> {
        let request = request.into_inner();
        reply(
            self.auth
                .update_user(&request.user_id, request.display_name.as_deref())
                .await,
        )
    }

    async fn list_memberships(
        &self,
        request: Request<pb::ListMembershipsRequest>,
    ) -> Reply<pb::Memberships> {
        let memberships = self
            .auth
            .list_memberships(&request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::Memberships {
            workspaces: memberships.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Reply<pb::Workspace> {
        let request = request.into_inner();
        reply(
            self.auth
                .create_workspace(&request.actor_user_id, &request.name)
                .await,
        )
    }

    async fn list_members(&self, request: Request<pb::ListMembersRequest>) -> Reply<pb::Members> {
        let request = request.into_inner();
        let members = self
            .auth
            .list_members(&request.actor_user_id, &request.workspace_id)
            .await?;
        Ok(Response::new(pb::Members {
            members: members.into_iter().map(Into::into).collect(),
        }))
    }

    async fn add_member(&self, request: Request<pb::AddMemberRequest>) -> Reply<pb::Member> {
        let request = request.into_inner();
        reply(
            self.auth
                .add_member(
                    &request.actor_user_id,
                    &request.workspace_id,
                    &request.email,
                    &request.role,
                )
                .await,
        )
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::RemoveMemberResponse> {
        let request = request.into_inner();
        self.auth
            .remove_member(
                &request.actor_user_id,
                &request.workspace_id,
                &request.user_id,
            )
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn list_sole_owned_workspaces(
        &self,
        request: Request<pb::ListSoleOwnedWorkspacesRequest>,
    ) -> Reply<pb::SoleOwnedWorkspaces> {
        let workspace_ids = self
            .auth
            .sole_owned_workspaces(&request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::SoleOwnedWorkspaces { workspace_ids }))
    }

    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> Reply<pb::DeletedUser> {
        let request = request.into_inner();
        reply(
            self.auth
                .delete_user(&request.user_id, &request.purged_workspace_ids)
                .await,
        )
    }

    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Reply<pb::RegisteredDevice> {
        let request = request.into_inner();
        let (device, created) = self
            .auth
            .register_device(
                &request.actor_user_id,
                &request.session_id,
                &request.platform,
                &request.target_json,
                request.app_id.as_deref(),
            )
            .await?;
        Ok(Response::new(pb::RegisteredDevice {
            device: Some(device.into()),
            created,
        }))
    }

    async fn list_devices(&self, request: Request<pb::ListDevicesRequest>) -> Reply<pb::Devices> {
        let devices = self
            .auth
            .list_devices(&request.get_ref().actor_user_id)
            .await?;
        Ok(Response::new(pb::Devices {
            devices: devices.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_device(
        &self,
        request: Request<pb::DeleteDeviceRequest>,
    ) -> Reply<pb::DeleteDeviceResponse> {
        let request = request.into_inner();
        let actor = Some(request.actor_user_id.as_str()).filter(|actor| !actor.is_empty());
        self.auth.delete_device(actor, &request.device_id).await?;
        Ok(Response::new(pb::DeleteDeviceResponse {}))
    }

    async fn get_push_settings(
        &self,
        request: Request<pb::GetPushSettingsRequest>,
    ) -> Reply<pb::PushSettings> {
        reply(
            self.auth
                .push_settings(&request.get_ref().actor_user_id)
                .await,
        )
    }

    async fn set_push_mute(
        &self,
        request: Request<pb::SetPushMuteRequest>,
    ) -> Reply<pb::PushSettings> {
        let request = request.into_inner();
        reply(
            self.auth
                .set_push_mute(
                    &request.actor_user_id,
                    &request.conversation_id,
                    request.muted,
                )
                .await,
        )
    }

    async fn list_push_targets(
        &self,
        request: Request<pb::ListPushTargetsRequest>,
    ) -> Reply<pb::PushTargets> {
        let request = request.into_inner();
        let devices = self
            .auth
            .push_targets(&request.workspace_id, &request.conversation_id)
            .await?;
        Ok(Response::new(pb::PushTargets {
            targets: devices
                .into_iter()
                .map(|device| pb::PushTarget {
                    user_id: device.user_id.clone(),
                    device: Some(device.into()),
                })
                .collect(),
        }))
    }
}

fn signing_keys(auth: &Auth) -> pb::SigningKeys {
    pb::SigningKeys {
        keys: auth
            .keys()
            .published()
            .into_iter()
            .map(|published| pb::SigningKey {
                kid: published.key.kid().to_owned(),
                algorithm: "EdDSA".to_owned(),
                public_key: published.key.to_bytes().to_vec(),
                created_at: published.created_at,
            })
            .collect(),
        issuer: tokens::ISSUER.to_owned(),
        audience: tokens::AUDIENCE.to_owned(),
    }
}

impl From<Device> for pb::Device {
    fn from(device: Device) -> Self {
        Self {
            id: device.id,
            platform: device.platform,
            target_json: device.target,
            app_id: device.app_id,
            created_at: device.created_at,
        }
    }
}

impl From<PushSettings> for pb::PushSettings {
    fn from(settings: PushSettings) -> Self {
        Self {
            muted: settings.muted,
            muted_conversation_ids: settings.muted_conversation_ids,
        }
    }
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            display_name: user.display_name,
        }
    }
}

impl From<Membership> for pb::Workspace {
    fn from(membership: Membership) -> Self {
        Self {
            id: membership.workspace_id,
            name: membership.workspace_name,
            role: membership.role,
        }
    }
}

impl From<IssuedSession> for pb::Session {
    fn from(session: IssuedSession) -> Self {
        Self {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            expires_in: session.expires_in,
            user: Some(session.user.into()),
            workspaces: session.workspaces.into_iter().map(Into::into).collect(),
            session_id: session.session_id,
        }
    }
}

impl From<Principal> for pb::Principal {
    fn from(principal: Principal) -> Self {
        Self {
            user: Some(principal.user.into()),
            workspaces: principal.workspaces.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<ApiKey> for pb::ApiKey {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        }
    }
}

impl From<CreatedApiKey> for pb::CreatedApiKey {
    fn from(created: CreatedApiKey) -> Self {
        Self {
            api_key: Some(created.api_key.into()),
            key: created.key,
        }
    }
}

impl From<ApiKeyIdentity> for pb::ApiKeyIdentity {
    fn from(identity: ApiKeyIdentity) -> Self {
        Self {
            api_key_id: identity.api_key_id,
            user_id: identity.user_id,
        }
    }
}

impl From<DeletedUser> for pb::DeletedUser {
    fn from(deleted: DeletedUser) -> Self {
        Self {
            user_id: deleted.user_id.unwrap_or_default(),
            deleted_workspace_ids: deleted.deleted_workspaces,
            removed_memberships: deleted
                .removed_memberships
                .into_iter()
                .map(|(user_id, workspace_id)| pb::MembershipChanged {
                    user_id,
                    workspace_id,
                    role: String::new(),
                })
                .collect(),
            revoked_until: deleted.revoked_until,
        }
    }
}

impl From<Member> for pb::Member {
    fn from(member: Member) -> Self {
        Self {
            user: Some(member.user.into()),
            role: member.role,
            joined_at: member.joined_at,
        }
    }
}
