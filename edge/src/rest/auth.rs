//! `/v1/auth/…`: sign-up, sign-in, refresh, logout.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use crawbl_proto::auth::v1::{LogoutRequest, RefreshRequest, SignInRequest, SignUpRequest};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::access::API_KEY_PREFIX;
use crate::shared::auth::{AuthFailure, token_from_headers};
use crate::shared::cluster::SocketChange;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, Session};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignUp {
    /// One `@`, a domain of at least two labels, no whitespace; compared lowercased.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 256 characters, kept as typed.
    #[schema(min_length = 8, max_length = 256, format = Password)]
    password: String,
    /// 1 to 100 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    display_name: String,
}

/// `POST /v1/auth/sign-up` → 201 with a session; the user's first workspace comes with it.
#[utoipa::path(
    post,
    operation_id = "signUp",
    path = "/auth/sign-up",
    tag = "auth",
    request_body = SignUp,
    responses(
        (status = 201, description = "signed up: a session and the first workspace", body = Data<Session>),
    ),
)]
pub async fn sign_up(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignUp>,
) -> Result<(StatusCode, axum::Json<Data<Session>>), ApiError> {
    let session = state
        .auth
        .clone()
        .sign_up(SignUpRequest {
            email: body.email,
            password: body.password,
            display_name: body.display_name,
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        axum::Json(Data {
            data: session.into(),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct SignIn {
    email: String,
    password: String,
}

/// The client's IP address (the TCP peer, or the forwarding client behind a trusted proxy),
/// for rate limiting sign-ins.
pub struct ClientAddress(Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(state.limits.trusted_proxies.client_of(parts)))
    }
}

/// `POST /v1/auth/sign-in` → 200 with a session; 429 `RATE_LIMITED` with `Retry-After` after
/// too many failures for the account or from the address.
#[utoipa::path(
    post,
    operation_id = "signIn",
    path = "/auth/sign-in",
    tag = "auth",
    request_body = SignIn,
    responses(
        (status = 200, description = "a new session", body = Data<Session>),
        (status = 429, description = "`RATE_LIMITED` (with `Retry-After`)", body = ErrorBody),
    ),
)]
pub async fn sign_in(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<axum::Json<Data<Session>>, ApiError> {
    let session = state
        .auth
        .clone()
        .sign_in(SignInRequest {
            email: body.email,
            password: body.password,
            client_address: address
                .map(|address| address.to_string())
                .unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(axum::Json(Data {
        data: session.into(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refresh {
    refresh_token: String,
}

/// `POST /v1/auth/refresh` `{"refreshToken"}` → 200 with a session and a new refresh token. A
/// refresh token used twice revokes its session (401 `REFRESH_TOKEN_REUSED`).
#[utoipa::path(
    post,
    operation_id = "refresh",
    path = "/auth/refresh",
    tag = "auth",
    request_body = Refresh,
    responses(
        (status = 200, description = "the session with a new refresh token", body = Data<Session>),
    ),
)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Refresh>,
) -> Result<axum::Json<Data<Session>>, ApiError> {
    let session = state
        .auth
        .clone()
        .refresh(RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await?
        .into_inner();
    Ok(axum::Json(Data {
        data: session.into(),
    }))
}

/// `POST /v1/auth/logout` with the session's access token (it may have expired) → 204. The
/// session is revoked: its tokens are refused on every edge node and its sockets disconnected.
#[utoipa::path(
    post,
    operation_id = "logout",
    path = "/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "the session is revoked"),
        (status = 422, description = "`NOT_A_SESSION`: an API key was sent; revoke keys with `DELETE /v1/api-keys/{id}`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = token_from_headers(&headers)
        .filter(|token| !token.is_empty())
        .ok_or(AuthFailure::Missing)?;
    if token.starts_with(API_KEY_PREFIX) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "NOT_A_SESSION",
            "API keys are not sessions: revoke one with DELETE /v1/api-keys/{id}",
        ));
    }
    let logged_out = state
        .auth
        .clone()
        .logout(LogoutRequest {
            access_token: token.to_owned(),
        })
        .await?
        .into_inner();
    state.access.revoke_session_here(&logged_out.session_id);
    state
        .sockets
        .apply(&SocketChange::DisconnectSession(logged_out.session_id))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
