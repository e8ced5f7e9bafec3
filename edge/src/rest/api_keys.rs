//! `/v1/api-keys`: long-lived keys for programmatic access, accepted like access tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::SocketChange;
use crate::shared::error::ApiError;
use crate::shared::json::{Data, Page, timestamp};

/// An API key as listed: never the key itself, only its first characters.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<pb::ApiKey> for ApiKey {
    fn from(key: pb::ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            created_at: timestamp(key.created_at),
            last_used_at: key.last_used_at.map(timestamp),
        }
    }
}

/// A new key, with the key itself: shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    pub key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label: 1 to 100 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

/// `POST /v1/api-keys` `{"name"}` → 201 with the key (the only time it is shown).
#[utoipa::path(
    post,
    operation_id = "createApiKey",
    path = "/api-keys",
    tag = "api-keys",
    request_body = CreateApiKey,
    responses((status = 201, description = "the key, shown this once", body = Data<CreatedApiKey>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<Data<CreatedApiKey>>), ApiError> {
    let created = state
        .auth
        .clone()
        .create_api_key(pb::CreateApiKeyRequest {
            actor_user_id: caller.user_id().to_owned(),
            name: body.name,
        })
        .await?
        .into_inner();
    let api_key = created
        .api_key
        .ok_or_else(|| tonic::Status::internal("create returned no key"))?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: CreatedApiKey {
                api_key: api_key.into(),
                key: created.key,
            },
        }),
    ))
}

/// `GET /v1/api-keys`: the caller's live keys, newest first.
#[utoipa::path(
    get,
    operation_id = "listApiKeys",
    path = "/api-keys",
    tag = "api-keys",
    responses((status = 200, description = "the caller's live keys", body = Page<ApiKey>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    let keys = state
        .auth
        .clone()
        .list_api_keys(pb::ListApiKeysRequest {
            actor_user_id: caller.user_id().to_owned(),
        })
        .await?
        .into_inner()
        .api_keys;
    Ok(Json(Page {
        data: keys.into_iter().map(ApiKey::from).collect(),
        next_cursor: None,
    }))
}

/// `DELETE /v1/api-keys/{id}` → 204. The key is refused at once on every edge node and its
/// sockets are disconnected; 404 for keys that are not the caller's.
#[utoipa::path(
    delete,
    operation_id = "revokeApiKey",
    path = "/api-keys/{api_key_id}",
    tag = "api-keys",
    params(("api_key_id" = String, Path)),
    responses((status = 204, description = "revoked; its sockets are disconnected")),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(api_key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .clone()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            actor_user_id: caller.user_id().to_owned(),
            api_key_id: api_key_id.clone(),
        })
        .await?;
    state.access.revoke_api_key_here(&api_key_id);
    state
        .sockets
        .apply(&SocketChange::DisconnectApiKey(api_key_id))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
