//! Who is calling: the credential of a REST request or Socket.IO handshake, resolved to a
//! principal (user and workspace memberships) by the auth service.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use crawbl_proto::auth::v1::{Principal, VerifyTokenRequest, Workspace};
use tonic::Code;

use crate::AppState;
use crate::error::ApiError;

/// Longest credential accepted; anything longer is refused before any call.
const MAX_TOKEN_BYTES: usize = 512;

/// The token from `X-Token: <token>` or `Authorization: Bearer <token>`, if either is present.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-token") {
        return value.to_str().ok().map(str::trim);
    }
    let authorization = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a credential was refused, in words fit for the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing credentials: send X-Token or Authorization: Bearer")]
    Missing,
    #[error("invalid or expired token")]
    Invalid,
    #[error("authentication is unavailable; retry shortly")]
    Unavailable,
}

/// Resolves `token` to its principal with the auth service.
pub async fn verify(state: &AppState, token: Option<&str>) -> Result<Principal, AuthFailure> {
    let token = token
        .filter(|token| !token.is_empty())
        .ok_or(AuthFailure::Missing)?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Invalid);
    }
    let response = state
        .auth
        .clone()
        .verify_token(VerifyTokenRequest {
            token: token.to_owned(),
        })
        .await;
    match response {
        Ok(principal) => Ok(principal.into_inner()),
        Err(status) if status.code() == Code::Unauthenticated => Err(AuthFailure::Invalid),
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "token verification failed");
            Err(AuthFailure::Unavailable)
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Unavailable => tonic::Status::unavailable(failure.to_string()).into(),
            AuthFailure::Missing | AuthFailure::Invalid => {
                ApiError::unauthenticated(failure.to_string())
            }
        }
    }
}

/// Extractor for handlers that need a signed-in caller.
pub struct Caller(pub Principal);

impl Caller {
    pub fn user_id(&self) -> &str {
        self.0
            .user
            .as_ref()
            .map(|user| user.id.as_str())
            .unwrap_or_default()
    }

    /// The caller's membership of `workspace_id`; 404 for anyone who is not a member.
    pub fn workspace(&self, workspace_id: &str) -> Result<&Workspace, ApiError> {
        self.0
            .workspaces
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
        Ok(Caller(
            verify(state, token_from_headers(&parts.headers)).await?,
        ))
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
