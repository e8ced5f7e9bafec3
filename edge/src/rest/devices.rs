//! `/v1/devices`: the caller's push notification devices, and `…/push`: what they muted
//! (SPEC §9). Auth keeps both (a device belongs to the session that registered it); the
//! conversation service sends the pushes. See docs/decisions.md, "Push to offline devices".

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::auth::v1 as pb;
use crawbl_proto::conversation::v1::{GetConversationRequest, GetPushKeysRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::auth::{Caller, Credential};
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, timestamp};

/// A registered device. FCM and APNs devices show their token, Web Push ones their endpoint.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    /// `fcm`, `apns` or `webpush`.
    pub platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub app_id: Option<String>,
    pub created_at: String,
}

impl From<pb::Device> for Device {
    fn from(device: pb::Device) -> Self {
        let target: serde_json::Value =
            serde_json::from_str(&device.target_json).unwrap_or_default();
        let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
        Self {
            id: device.id,
            platform: device.platform,
            token: text(&target["token"]),
            endpoint: text(&target["subscription"]["endpoint"]),
            app_id: device.app_id,
            created_at: timestamp(device.created_at),
        }
    }
}

/// A Web Push subscription, as the browser's `PushSubscription.toJSON()` gives it. (Only the
/// document's schema: the body keeps it as JSON for auth to check, which gives the stable codes.)
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PushSubscription {
    /// The push service's URL for this browser (`https://`).
    endpoint: String,
    keys: SubscriptionKeys,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key (65 bytes, uncompressed), base64url.
    p256dh: String,
    /// The 16-byte authentication secret, base64url.
    auth: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterDevice {
    /// `fcm`, `apns` or `webpush` (anything else: 400 `UNKNOWN_PLATFORM`).
    platform: String,
    /// The FCM registration token or the APNs device token (hex); for `fcm` and `apns`.
    token: Option<String>,
    /// The Web Push subscription; for `webpush`.
    #[schema(value_type = Option<PushSubscription>)]
    subscription: Option<serde_json::Value>,
    /// The app the token belongs to (e.g. its bundle id), for the client's own bookkeeping.
    #[schema(min_length = 1, max_length = 255)]
    app_id: Option<String>,
}

/// `POST /v1/devices` `{platform, token | subscription, appId?}` → 201 with the device.
/// Idempotent per token: the same token again is the same device (moved to the caller if
/// another user had registered it). The device belongs to the caller's session: logging out of
/// it removes the device. Only with a session's access token (an API key gets 403
/// `SESSION_REQUIRED`).
#[utoipa::path(
    post,
    operation_id = "registerDevice",
    path = "/devices",
    tag = "devices",
    request_body = RegisterDevice,
    responses(
        (status = 201, description = "the device", body = Data<Device>),
        (status = 400, description = "`UNKNOWN_PLATFORM`, `INVALID_APP_ID`, or both a token and a subscription (`INVALID_DEVICE`)", body = ErrorBody),
        (status = 403, description = "`SESSION_REQUIRED`: devices belong to a session, not an API key", body = ErrorBody),
        (status = 422, description = "`INVALID_DEVICE_TOKEN` or `INVALID_SUBSCRIPTION`: missing or malformed", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterDevice>,
) -> Result<(StatusCode, Json<Data<Device>>), ApiError> {
    let Credential::Session(session_id) = &caller.identity.credential else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "SESSION_REQUIRED",
            "a device belongs to a signed-in session: use a session's access token, not an API key",
        ));
    };
    let target_json = match (body.token, body.subscription) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "INVALID_DEVICE",
                "send a token (fcm, apns) or a subscription (webpush), not both",
            ));
        }
        (Some(token), None) => serde_json::Value::String(token).to_string(),
        (None, Some(subscription)) => subscription.to_string(),
        // Auth says which is missing, after checking the platform.
        (None, None) => "null".to_owned(),
    };
    let registered = state
        .auth
        .clone()
        .register_device(pb::RegisterDeviceRequest {
            actor_user_id: caller.user_id().to_owned(),
            session_id: session_id.clone(),
            platform: body.platform,
            target_json,
            app_id: body.app_id,
        })
        .await?
        .into_inner();
    let device = registered
        .device
        .ok_or_else(|| tonic::Status::internal("register returned no device"))?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: device.into(),
        }),
    ))
}

/// `GET /v1/devices`: the caller's devices, oldest first.
#[utoipa::path(
    get,
    operation_id = "listDevices",
    path = "/devices",
    tag = "devices",
    responses((status = 200, description = "the caller's devices", body = Data<Vec<Device>>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Data<Vec<Device>>>, ApiError> {
    let devices = state
        .auth
        .clone()
        .list_devices(pb::ListDevicesRequest {
            actor_user_id: caller.user_id().to_owned(),
        })
        .await?
        .into_inner()
        .devices;
    Ok(Json(Data {
        data: devices.into_iter().map(Into::into).collect(),
    }))
}

/// `DELETE /v1/devices/{device_id}` → 204; 404 `DEVICE_NOT_FOUND` for anyone else's device.
#[utoipa::path(
    delete,
    operation_id = "deleteDevice",
    path = "/devices/{device_id}",
    tag = "devices",
    params(("device_id" = String, Path, description = "a device of the caller")),
    responses(
        (status = 204, description = "the device is removed"),
        (status = 404, description = "`DEVICE_NOT_FOUND`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .clone()
        .delete_device(pb::DeleteDeviceRequest {
            actor_user_id: caller.user_id().to_owned(),
            device_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a browser subscribes with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebPushKey {
    /// The VAPID public key (uncompressed P-256, base64url): `PushManager.subscribe`'s
    /// `applicationServerKey`.
    pub public_key: String,
}

/// `GET /v1/devices/webpush-key`: the key a browser subscribes with before it registers a
/// `webpush` device; 404 `WEBPUSH_OFF` while Web Push is not configured.
#[utoipa::path(
    get,
    operation_id = "getWebPushKey",
    path = "/devices/webpush-key",
    tag = "devices",
    responses(
        (status = 200, description = "the VAPID public key", body = Data<WebPushKey>),
        (status = 404, description = "`WEBPUSH_OFF`: Web Push is not configured", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn webpush_key(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Data<WebPushKey>>, ApiError> {
    let keys = state
        .conversations
        .clone()
        .get_push_keys(GetPushKeysRequest {})
        .await?
        .into_inner();
    let public_key = keys.vapid_public_key.ok_or_else(|| {
        ApiError::not_found("WEBPUSH_OFF", "Web Push is not configured on this server")
    })?;
    Ok(Json(Data {
        data: WebPushKey { public_key },
    }))
}

/// What the caller muted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushSettings {
    /// Every push is muted.
    pub muted: bool,
    pub muted_conversation_ids: Vec<String>,
}

impl From<pb::PushSettings> for PushSettings {
    fn from(settings: pb::PushSettings) -> Self {
        Self {
            muted: settings.muted,
            muted_conversation_ids: settings.muted_conversation_ids,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMuted {
    muted: bool,
}

/// `GET /v1/users/me/push`: what the caller muted.
#[utoipa::path(
    get,
    operation_id = "getPushSettings",
    path = "/users/me/push",
    tag = "devices",
    responses((status = 200, description = "the caller's push settings", body = Data<PushSettings>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn settings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Data<PushSettings>>, ApiError> {
    let settings = state
        .auth
        .clone()
        .get_push_settings(pb::GetPushSettingsRequest {
            actor_user_id: caller.user_id().to_owned(),
        })
        .await?
        .into_inner();
    Ok(Json(Data {
        data: settings.into(),
    }))
}

/// `PUT /v1/users/me/push` `{"muted"}`: mutes (or unmutes) every push to the caller's devices.
#[utoipa::path(
    put,
    operation_id = "setPushMuted",
    path = "/users/me/push",
    tag = "devices",
    request_body = SetMuted,
    responses((status = 200, description = "the caller's push settings", body = Data<PushSettings>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn mute_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SetMuted>,
) -> Result<Json<Data<PushSettings>>, ApiError> {
    set_mute(&state, &caller, String::new(), body.muted).await
}

/// `PUT /v1/workspaces/{w}/conversations/{c}/push` `{"muted"}`: mutes (or unmutes) pushes
/// about this conversation for the caller.
#[utoipa::path(
    put,
    operation_id = "setConversationPushMuted",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/push",
    tag = "devices",
    request_body = SetMuted,
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
    ),
    responses((status = 200, description = "the caller's push settings", body = Data<PushSettings>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn mute_conversation(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetMuted>,
) -> Result<Json<Data<PushSettings>>, ApiError> {
    caller.workspace(&workspace_id)?;
    // 404 unless the conversation is there for the caller.
    let conversation = state
        .conversations
        .clone()
        .get_conversation(GetConversationRequest {
            workspace_id,
            conversation_id,
            reader_id: String::new(),
            member_of: Vec::new(),
        })
        .await?
        .into_inner();
    set_mute(&state, &caller, conversation.id, body.muted).await
}

async fn set_mute(
    state: &AppState,
    caller: &Caller,
    conversation_id: String,
    muted: bool,
) -> Result<Json<Data<PushSettings>>, ApiError> {
    let settings = state
        .auth
        .clone()
        .set_push_mute(pb::SetPushMuteRequest {
            actor_user_id: caller.user_id().to_owned(),
            conversation_id,
            muted,
        })
        .await?
        .into_inner();
    Ok(Json(Data {
        data: settings.into(),
    }))
}
