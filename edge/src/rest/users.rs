//! `/v1/users/me`: the caller's own profile.

use axum::Json;
use axum::extract::State;
use crawbl_proto::auth::v1::{GetUserRequest, UpdateUserRequest};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::ApiError;
use crate::shared::json::{Data, User};

/// `GET /v1/users/me`.
#[utoipa::path(
    get,
    operation_id = "getMe",
    path = "/users/me",
    tag = "users",
    responses((status = 200, description = "the caller", body = Data<User>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Data<User>>, ApiError> {
    let user = state
        .auth
        .clone()
        .get_user(GetUserRequest {
            user_id: caller.user_id().to_owned(),
        })
        .await?
        .into_inner();
    Ok(Json(Data { data: user.into() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMe {
    /// 1 to 100 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    display_name: Option<String>,
}

/// `PATCH /v1/users/me` `{"displayName"?}` → the updated user.
#[utoipa::path(
    patch,
    operation_id = "updateMe",
    path = "/users/me",
    tag = "users",
    request_body = UpdateMe,
    responses((status = 200, description = "the updated caller", body = Data<User>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UpdateMe>,
) -> Result<Json<Data<User>>, ApiError> {
    let user = state
        .auth
        .clone()
        .update_user(UpdateUserRequest {
            user_id: caller.user_id().to_owned(),
            display_name: body.display_name,
        })
        .await?
        .into_inner();
    Ok(Json(Data { data: user.into() }))
}
