//! Extractors whose rejections are the API's own errors, never axum's plain-text ones.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::shared::error::ApiError;

/// A JSON object body: 400 `INVALID_JSON` when it does not parse or is not an object, 413
/// `BODY_TOO_LARGE` past the limit.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read as an object first: serde would also take a struct from an array of its fields.
        let axum::Json(fields) = axum::Json::<Map<String, Value>>::from_request(request, state)
            .await
            .map_err(|rejection| json_error(&rejection))?;
        serde_json::from_value(Value::Object(fields))
            .map(Self)
            .map_err(|error| {
                ApiError::bad_request("INVALID_JSON", format!("invalid body: {error}"))
            })
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            "the request body is larger than 1 MiB",
        );
    }
    ApiError::bad_request("INVALID_JSON", rejection.body_text())
}

/// Query parameters: 400 `INVALID_QUERY` when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::bad_request("INVALID_QUERY", rejection.body_text())
            })
    }
}

/// `?before=<cursor>&limit=<n>` of a newest-first listing.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `nextCursor` of the previous page.
    pub before: Option<String>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl PageQuery {
    /// The limit for the service: 0 (its default) when absent; 0 from a client is refused.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            Some(0) => Err(ApiError::bad_request(
                "INVALID_LIMIT",
                "limit must be between 1 and 100",
            )),
            limit => Ok(limit.unwrap_or(0)),
        }
    }
}
