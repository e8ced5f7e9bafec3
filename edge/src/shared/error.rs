//! The one error type of every REST handler, rendered as the spec's error body:
//! `{"error": {"code", "message", "requestId"}}`. 5xx bodies never carry internal text.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use utoipa::ToSchema;

/// The body of every error answer: `{"error": {"code", "message", "requestId"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// What the refusal is about, where it helps (the message a cancel found already ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `EMPTY_MESSAGE` or `RUNTIME_NOT_READY`.
    pub code: String,
    /// For people; 5xx answers never carry internal details.
    pub message: String,
    /// Quote it when reporting a problem: the server's log has the same id.
    pub request_id: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    retry_after_secs: Option<u64>,
    data: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            retry_after_secs: None,
            data: None,
        }
    }

    /// The same error, carrying `data` beside it (`{"error": …, "data": …}`).
    pub fn with_data(self, data: impl Serialize) -> Self {
        Self {
            data: serde_json::to_value(data).ok(),
            ..self
        }
    }

    /// The stable code, for answers that are not HTTP (a socket's ack).
    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// A service's refusal of something a member may see but not do (`PermissionDenied`) is a
    /// 403 with the service's code: the thing is no secret to them. Other answers as usual.
    pub fn forbidden_to_members(status: tonic::Status) -> Self {
        if status.code() != Code::PermissionDenied {
            return status.into();
        }
        Self {
            status: StatusCode::FORBIDDEN,
            code: Cow::Owned(
                crawbl_infra::grpc::stable_code(&status)
                    .unwrap_or("FORBIDDEN")
                    .to_owned(),
            ),
            message: status.message().to_owned(),
            retry_after_secs: None,
            data: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 429 `RATE_LIMITED` with `Retry-After`.
    pub fn rate_limited(
        limited: &crate::shared::limits::Limited,
        message: impl Into<String>,
    ) -> Self {
        Self {
            retry_after_secs: Some(limited.retry_after_secs()),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", message)
        }
    }

    /// Also what a non-member gets for a workspace, so ids do not leak.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

/// A service's answer, mapped to HTTP: the status picks the HTTP code, the stable code travels
/// in the `crawbl-error-code` metadata.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let stable =
            crawbl_infra::grpc::stable_code(&status).map(|code| Cow::Owned(code.to_owned()));
        let (http, default_code) = match status.code() {
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            // Asked for what is no longer kept (events pruned from the log).
            Code::OutOfRange => (StatusCode::GONE, "GONE"),
            Code::FailedPrecondition => (StatusCode::UNPROCESSABLE_ENTITY, "UNPROCESSABLE"),
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::AlreadyExists | Code::Aborted => (StatusCode::CONFLICT, "CONFLICT"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            // Never 403: a resource the caller may not see does not exist for them.
            Code::PermissionDenied => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        let mut error = Self {
            status: http,
            code: stable.unwrap_or(Cow::Borrowed(default_code)),
            message: status.message().to_owned(),
            // A service that says when to retry (a rate limit) is passed on as `Retry-After`.
            retry_after_secs: crawbl_infra::grpc::retry_after(&status),
            data: None,
        };
        if http.is_server_error() {
            tracing::error!(code = ?status.code(), message = status.message(), "service call failed");
            if http == StatusCode::SERVICE_UNAVAILABLE {
                error.retry_after_secs = Some(error.retry_after_secs.unwrap_or(1));
                // A stable code means a service chose the words for the client; keep them.
                if crawbl_infra::grpc::stable_code(&status).is_none() {
                    error.message = "a backend service is unavailable; retry shortly".to_owned();
                }
            } else {
                error.message = "internal error".to_owned();
            }
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = uuid::Uuid::now_v7().to_string();
        if self.status.is_server_error() {
            tracing::warn!(%request_id, status = %self.status, code = %self.code, "request failed");
        } else {
            tracing::debug!(%request_id, status = %self.status, code = %self.code, "request refused");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into_owned(),
                message: self.message,
                request_id,
            },
            data: self.data,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
