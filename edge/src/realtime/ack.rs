//! The ack of every client event that asks for one: `{data: …}`, or `{error: {code, message}}`
//! (with `retryAfter` seconds where waiting helps, and `data` beside it where the refusal is
//! about something, as a cancel of a finished turn). A bad payload gets an error ack, never a
//! disconnect.

use serde::Serialize;
use socketioxide::extract::AckSender;

use crate::shared::cluster::Adapter;
use crate::shared::error::ApiError;

#[derive(Serialize)]
pub struct Answer<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Refusal>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl<T> Answer<T> {
    pub fn data(data: T) -> Self {
        Self {
            data: Some(data),
            error: None,
        }
    }

    pub fn refused(code: &str, message: impl Into<String>) -> Self {
        Self {
            data: None,
            error: Some(Refusal {
                code: code.to_owned(),
                message: message.into(),
                retry_after: None,
            }),
        }
    }

    /// A refusal with what the caller would have been told over REST.
    pub fn from_error(error: &ApiError) -> Self {
        Self {
            data: None,
            error: Some(Refusal {
                code: error.code().to_owned(),
                message: error.message().to_owned(),
                retry_after: error.retry_after_secs(),
            }),
        }
    }
}

impl<T: Serialize> Answer<T> {
    /// Sends the ack; a client that asked for none (or left) is no error.
    pub fn send(self, ack: AckSender<Adapter>, event: &'static str) {
        if let Err(error) = ack.send(&self) {
            tracing::debug!(%error, event, "cannot answer a client event");
        }
    }
}
