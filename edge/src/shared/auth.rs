//! Who is calling: the credential of a REST request or Socket.IO handshake, verified on this node
//! (see [`crate::shared::access`]), with the caller's workspace memberships.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use crawbl_proto::auth::v1::Workspace;

use crate::AppState;
pub use crate::shared::access::{AuthFailure, Credential, Identity};
use crate::shared::error::ApiError;

/// The token from `X-Token: <token>` or `Authorization: Bearer <token>`, if either is present.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-token") {
        return value.to_str().ok().map(str::trim);
    }
    let authorization = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Verifies `token` and loads the caller's memberships.
pub async fn verify(state: &AppState, token: Option<&str>) -> Result<Caller, AuthFailure> {
    let identity = state.access.authenticate(token).await?;
    let workspaces = state.access.memberships(&identity.user_id).await?;
    Ok(Caller {
        identity,
        workspaces,
    })
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Unavailable => tonic::Status::unavailable(failure.to_string()).into(),
            AuthFailure::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TOKEN_EXPIRED",
                failure.to_string(),
            ),
            AuthFailure::Missing | AuthFailure::Invalid => {
                ApiError::unauthenticated(failure.to_string())
            }
        }
    }
}

/// Extractor for handlers that need a signed-in caller: who they are, what authenticated them,
/// and the workspaces they belong to.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    pub workspaces: Arc<Vec<Workspace>>,
}

impl Caller {
    pub fn user_id(&self) -> &str {
        &self.identity.user_id
    }

    /// The caller's membership of `workspace_id`; 404 for anyone who is not a member.
    pub fn workspace(&self, workspace_id: &str) -> Result<&Workspace, ApiError> {
        self.workspaces
            .iter()
            .find(|workspace| workspace.id == workspace_id)
            .ok_or_else(|| ApiError::not_found("WORKSPACE_NOT_FOUND", "workspace not found"))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(verify(state, token_from_headers(&parts.headers)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_token_comes_from_x_token_or_a_bearer_authorization() {
        assert_eq!(
            token_from_headers(&headers(&[("x-token", "abc")])),
            Some("abc")
        );
        assert_eq!(
            token_from_headers(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            token_from_headers(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
    }

    #[test]
    fn other_authorization_schemes_give_no_token() {
        assert_eq!(
            token_from_headers(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            token_from_headers(&headers(&[("authorization", "Bearer")])),
            None
        );
        assert_eq!(token_from_headers(&HeaderMap::new()), None);
    }
}
