//! The OpenAPI 3 document of the REST API (`GET /v1/openapi.json`), generated from the code:
//! every handler carries its `#[utoipa::path]`, every JSON type derives its schema, and the
//! router is built from those same handlers (`utoipa_axum::routes!`), so a route cannot be
//! served without being documented. This module adds what is common to all of them: the
//! document's header, the two ways to authenticate, and the error body of every failure.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::shared::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Crawbl",
        description = "REST API of the Crawbl edge. Success bodies are `{\"data\": …}` (lists add \
                       `nextCursor`); failures are `{\"error\": {\"code\", \"message\", \
                       \"requestId\"}}`. Live events arrive over Socket.IO on namespace `/v1`, \
                       documented in docs/socket-events.md."
    ),
    tags(
        (name = "auth", description = "Sign-up, sign-in, token refresh and logout."),
        (name = "users", description = "The caller's profile."),
        (name = "api-keys", description = "Long-lived keys acting as their user."),
        (name = "devices", description = "Push notification devices, and what their user muted."),
        (name = "workspaces", description = "Workspaces, their runtime and agents."),
        (name = "members", description = "Who belongs to a workspace."),
        (name = "conversations", description = "Conversations with an agent."),
        (name = "messages", description = "Messages; the agent's reply streams as events."),
        (name = "events", description = "The durable event log, for resync after a gap."),
        (name = "operability", description = "Health, readiness, metrics and this document."),
    ),
    components(schemas(ErrorBody)),
    modifiers(&Authentication),
)]
pub struct ApiDoc;

/// An access token or API key, as `Authorization: Bearer …` or `X-Token: …`.
struct Authentication;

impl Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token or cak_… API key")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "xToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Token",
                "an access token or API key",
            ))),
        );
    }
}

/// The finished document as JSON: `openapi` is [`ApiDoc`] with the router's paths merged in.
pub fn to_json(mut openapi: utoipa::openapi::OpenApi) -> anyhow::Result<String> {
    add_error_responses(&mut openapi);
    Ok(openapi.to_json()?)
}

/// Every operation may fail with the standard error body; the statuses each one documents are
/// the ones worth knowing about, this `default` covers the rest (400, 401, 404, 413, 5xx…).
/// Applied once the paths are merged (the derive's modifiers run before that).
fn add_error_responses(openapi: &mut utoipa::openapi::OpenApi) {
    let error = ResponseBuilder::new()
        .description(
            "an error: 400 invalid input, 401 unauthenticated, 404 not found (or not a \
             member), 409 conflict, 413 body too large, 422 semantic error, 429 rate limited, \
             503 unavailable (with `Retry-After`)",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    ErrorBody::name(),
                ))))
                .build(),
        )
        .build();
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            if operation
                .tags
                .iter()
                .flatten()
                .any(|tag| tag == "operability")
            {
                continue;
            }
            operation
                .responses
                .responses
                .entry("default".to_owned())
                .or_insert_with(|| RefOr::T(error.clone()));
        }
    }
}
