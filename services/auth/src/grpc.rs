//! The `crawbl.auth.v1.AuthService` gRPC API over [`Auth`].

use crawbl_proto::auth::v1 as pb;
use crawbl_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use tonic::{Request, Response, Status};

use crate::domain::{IssuedSession, Membership, Principal, User};
use crate::service::Auth;

pub struct AuthGrpc {
    auth: Auth,
}

impl AuthGrpc {
    /// The service, ready to hand to `crawbl_infra::grpc::serve`.
    pub fn server(auth: Auth) -> AuthServiceServer<Self> {
        AuthServiceServer::new(Self { auth })
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let request = request.into_inner();
        let session = self
            .auth
            .sign_up(&request.email, &request.password, &request.display_name)
            .await?;
        Ok(Response::new(session.into()))
    }

    async fn sign_in(
        &self,
        request: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let request = request.into_inner();
        let session = self.auth.sign_in(&request.email, &request.password).await?;
        Ok(Response::new(session.into()))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        let principal = self.auth.verify_token(&request.get_ref().token).await?;
        Ok(Response::new(principal.into()))
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
