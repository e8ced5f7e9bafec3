//! Push notification devices and preferences (SPEC §9). Auth keeps them because each device
//! belongs to the session that registered it: logging out (or a revoked session) removes the
//! session's devices, and deleting the account removes all of the user's, in the same database
//! as the sessions and memberships they follow. The conversation service, which sends the
//! pushes, asks [`Auth::push_targets`] who to send a reply to. See docs/decisions.md, "Push".

use crawbl_push::{InvalidTarget, Target, TargetInput, ValidationOptions, validate_target};

use crate::db::devices::{self, DeviceRow, NewDevice};
use crate::db::sessions;
use crate::error::AuthError;
use crate::service::{Auth, now_millis};

/// A device as registered; `target` is the normalized [`Target`] as JSON.
pub type Device = DeviceRow;

/// What muting applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSettings {
    /// Every push is muted.
    pub muted: bool,
    pub muted_conversation_ids: Vec<String>,
}

impl Auth {
    /// Registers a device for `user_id`'s session `session_id`: `target_json` is the token (a
    /// JSON string) or the Web Push subscription (an object) as the client sent it. The same
    /// token again is the same device (moved to this user and session when another held it).
    pub async fn register_device(
        &self,
        user_id: &str,
        session_id: &str,
        platform: &str,
        target_json: &str,
        app_id: Option<&str>,
    ) -> Result<(Device, bool), AuthError> {
        let target = parse_target(platform, target_json, self.push_validation)?;
        if let Some(app_id) = app_id
            && (app_id.is_empty() || app_id.len() > 255 || app_id.chars().any(char::is_control))
        {
            return Err(AuthError::InvalidAppId);
        }
        // Only a live session of the user registers (not one logged out a moment ago).
        let live = sessions::find_session(&self.pool, session_id)
            .await?
            .is_some_and(|session| session.revoked_at.is_none() && session.user_id == user_id);
        if !live {
            return Err(AuthError::InvalidToken);
        }
        let token = match &target {
            Target::Fcm { token } | Target::Apns { token } => token.clone(),
            Target::WebPush { subscription } => subscription.endpoint.clone(),
        };
        let target_json = serde_json::to_string(&target)
            .map_err(|error| AuthError::Internal(anyhow::Error::new(error)))?;
        let id = uuid::Uuid::now_v7().to_string();
        let (device, created) = devices::upsert(
            &self.pool,
            &NewDevice {
                id: &id,
                user_id,
                session_id,
                platform: target.platform().as_str(),
                token: &token,
                target: &target_json,
                app_id,
                now: now_millis(),
            },
        )
        .await
        .map_err(|error| {
            // The session is gone (logged out a moment ago): its token no longer works either.
            if crawbl_infra::db::is_foreign_key_violation(&error) {
                AuthError::InvalidToken
            } else {
                error.into()
            }
        })?;
        if created {
            tracing::info!(user_id, device_id = %device.id, platform, "device registered");
        }
        Ok((device, created))
    }

    pub async fn list_devices(&self, user_id: &str) -> Result<Vec<Device>, AuthError> {
        Ok(devices::list_of_user(&self.pool, user_id).await?)
    }

    /// Deletes `user_id`'s device (any user's with `None`: a token the provider refused).
    pub async fn delete_device(
        &self,
        user_id: Option<&str>,
        device_id: &str,
    ) -> Result<(), AuthError> {
        if devices::delete(&self.pool, device_id, user_id).await? {
            Ok(())
        } else {
            Err(AuthError::DeviceNotFound)
        }
    }

    pub async fn push_settings(&self, user_id: &str) -> Result<PushSettings, AuthError> {
        let mut settings = PushSettings::default();
        for conversation_id in devices::mutes(&self.pool, user_id).await? {
            if conversation_id.is_empty() {
                settings.muted = true;
            } else {
                settings.muted_conversation_ids.push(conversation_id);
            }
        }
        Ok(settings)
    }

    /// Mutes or unmutes `conversation_id` for `user_id`, or every push with `""`. (The caller
    /// checked that the user may see the conversation.)
    pub async fn set_push_mute(
        &self,
        user_id: &str,
        conversation_id: &str,
        muted: bool,
    ) -> Result<PushSettings, AuthError> {
        devices::set_mute(&self.pool, user_id, conversation_id, muted).await?;
        self.push_settings(user_id).await
    }

    /// The devices a push about a reply in `conversation_id` goes to: those of the workspace's
    /// members who muted neither the conversation nor every push.
    pub async fn push_targets(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<Device>, AuthError> {
        Ok(devices::push_targets(&self.pool, workspace_id, conversation_id).await?)
    }
}

/// `target_json` read as `platform`'s target and checked.
fn parse_target(
    platform: &str,
    target_json: &str,
    options: ValidationOptions,
) -> Result<Target, AuthError> {
    let platform_checked: crawbl_push::Platform = platform.parse()?;
    let input: TargetInput =
        serde_json::from_str(target_json).map_err(|_| match platform_checked {
            crawbl_push::Platform::WebPush => InvalidTarget::Subscription(
                "a subscription is an object {endpoint, keys: {p256dh, auth}}",
            ),
            _ => InvalidTarget::DeviceToken("a token is a string"),
        })?;
    Ok(validate_target(platform, &input, options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked_with_stable_codes() {
        let options = ValidationOptions::default();
        let code = |platform: &str, json: &str| match parse_target(platform, json, options) {
            Err(AuthError::InvalidDevice(invalid)) => invalid.code(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(code("sms", "\"abc\""), "UNKNOWN_PLATFORM");
        assert_eq!(code("apns", "\"zz\""), "INVALID_DEVICE_TOKEN");
        assert_eq!(code("fcm", "{\"endpoint\": 1}"), "INVALID_DEVICE_TOKEN");
        assert_eq!(code("webpush", "\"token\""), "INVALID_SUBSCRIPTION");
        assert_eq!(code("webpush", "{}"), "INVALID_SUBSCRIPTION");
        assert!(parse_target("fcm", "\"a-token\"", options).is_ok());
        assert!(parse_target("apns", &format!("\"{}\"", "AB".repeat(32)), options).is_ok());
    }
}
