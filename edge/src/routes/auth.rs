use axum::extract::State;
use axum::http::StatusCode;
use crawbl_proto::auth::v1::{SignInRequest, SignUpRequest};
use serde::Deserialize;

use super::extract::ApiJson;
use crate::AppState;
use crate::error::ApiError;
use crate::json::{Data, Session};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignUp {
    email: String,
    password: String,
    display_name: String,
}

/// `POST /v1/auth/sign-up` → 201 with a session; the user's first workspace comes with it.
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

#[derive(Deserialize)]
pub struct SignIn {
    email: String,
    password: String,
}

/// `POST /v1/auth/sign-in` → 200 with a session.
pub async fn sign_in(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<axum::Json<Data<Session>>, ApiError> {
    let session = state
        .auth
        .clone()
        .sign_in(SignInRequest {
            email: body.email,
            password: body.password,
        })
        .await?
        .into_inner();
    Ok(axum::Json(Data {
        data: session.into(),
    }))
}
