//! A workspace's agents (SPEC §9 "Agents and turns"): members read them, owners and admins
//! create, change and archive them. Every change reaches every device as the durable
//! `agent.updated` event.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::auth::v1::Workspace as Membership;
use crawbl_proto::conversation::v1 as conv;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Agent, Data, Page};

/// Agents (and usage) are managed by owners and admins; members see the 403 (the workspace is
/// theirs to see, so nothing leaks).
/// `what` completes "only an owner or admin of the workspace …".
pub(super) fn require_admin(membership: &Membership, what: &str) -> Result<(), ApiError> {
    if matches!(membership.role.as_str(), "owner" | "admin") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "ADMIN_REQUIRED",
        format!("only an owner or admin of the workspace {what}"),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Archived agents too (default false).
    include_archived: Option<bool>,
}

/// `GET /v1/workspaces/{w}/agents`, each with its live status.
#[utoipa::path(
    get,
    operation_id = "listAgents",
    path = "/workspaces/{workspace_id}/agents",
    tag = "agents",
    params(("workspace_id" = String, Path, description = "a workspace of the caller"), ListQuery),
    responses(
        (status = 200, description = "the agents in their order, with their live status", body = Page<Agent>),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Agent>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let agents = state
        .conversations
        .clone()
        .list_agents(conv::ListAgentsRequest {
            workspace_id,
            include_archived: query.include_archived.unwrap_or(false),
        })
        .await?
        .into_inner()
        .agents;
    Ok(Json(Page {
        data: agents.into_iter().map(Agent::from).collect(),
        next_cursor: None,
    }))
}

/// An MCP server as a client sends it.
#[derive(Deserialize, ToSchema)]
// `deny_unknown_fields` tells the schema (additionalProperties: false); `try_from` does the work.
#[serde(try_from = "Map<String, Value>", deny_unknown_fields)]
pub struct McpServerBody {
    /// Prefixes the server's tools: `{name}__{tool}`.
    #[schema(pattern = r"^[a-z][a-z0-9-]{0,31}$")]
    name: String,
    /// The server's streamable HTTP endpoint.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[^\s/?#\x00-\x1f\x7f-\x9f]+[^\s\x00-\x1f\x7f-\x9f]*$"
    )]
    url: String,
}

impl TryFrom<Map<String, Value>> for McpServerBody {
    type Error = serde_json::Error;

    /// Only a JSON object with exactly these fields (serde alone would take an array of them).
    fn try_from(fields: Map<String, Value>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            name: String,
            url: String,
        }
        let Fields { name, url } = serde_json::from_value(Value::Object(fields))?;
        Ok(Self { name, url })
    }
}

/// A built-in tool of the runtime, by name.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct ToolName(String);

impl utoipa::PartialSchema for ToolName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^[a-z][a-z0-9_]{0,63}$"))
            .into()
    }
}

impl ToSchema for ToolName {}

fn tool_names(names: Vec<ToolName>) -> Vec<String> {
    names.into_iter().map(|ToolName(name)| name).collect()
}

fn mcp_servers(servers: Vec<McpServerBody>) -> Vec<conv::McpServer> {
    servers
        .into_iter()
        .map(|server| conv::McpServer {
            name: server.name,
            url: server.url,
        })
        .collect()
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgent {
    /// Unique in the workspace: 1 to 32 of a-z, 0-9, `-` and `_`, starting with a letter.
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    slug: String,
    /// 1 to 100 characters on one line.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    #[schema(
        max_length = 1000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    description: Option<String>,
    /// At most 16,384 characters; empty: the runtime's default persona.
    #[schema(
        max_length = 16384,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    system_prompt: Option<String>,
    /// Empty: the runtime's configured model.
    #[schema(max_length = 200, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]*$")]
    model: Option<String>,
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    /// Built-in tools: `time`, `calculator`.
    #[schema(max_items = 32)]
    tools: Option<Vec<ToolName>>,
    #[schema(max_items = 8)]
    mcp_servers: Option<Vec<McpServerBody>>,
}

/// `POST /v1/workspaces/{w}/agents` → 201 with the agent (owners and admins).
#[utoipa::path(
    post,
    operation_id = "createAgent",
    path = "/workspaces/{workspace_id}/agents",
    tag = "agents",
    request_body = CreateAgent,
    params(("workspace_id" = String, Path, description = "a workspace of the caller")),
    responses(
        (status = 201, description = "the new agent", body = Data<Agent>),
        (status = 403, description = "`ADMIN_REQUIRED`", body = ErrorBody),
        (status = 409, description = "`AGENT_SLUG_TAKEN`", body = ErrorBody),
        (status = 422, description = "a field is not valid (`INVALID_SLUG`, `INVALID_TOOLS`, …)", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<Data<Agent>>), ApiError> {
    require_admin(caller.workspace(&workspace_id)?, "may change its agents")?;
    let agent = state
        .conversations
        .clone()
        .create_agent(conv::CreateAgentRequest {
            workspace_id,
            slug: body.slug,
            name: body.name,
            description: body.description.unwrap_or_default(),
            system_prompt: body.system_prompt.unwrap_or_default(),
            model: body.model.unwrap_or_default(),
            temperature: body.temperature,
            tools: tool_names(body.tools.unwrap_or_default()),
            mcp_servers: mcp_servers(body.mcp_servers.unwrap_or_default()),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(Data { data: agent.into() })))
}

/// `GET /v1/workspaces/{w}/agents/{a}`, archived or not.
#[utoipa::path(
    get,
    operation_id = "getAgent",
    path = "/workspaces/{workspace_id}/agents/{agent_id}",
    tag = "agents",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("agent_id" = String, Path),
    ),
    responses((status = 200, description = "the agent", body = Data<Agent>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, agent_id)): Path<(String, String)>,
) -> Result<Json<Data<Agent>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let agent = state
        .conversations
        .clone()
        .get_agent(conv::GetAgentRequest {
            workspace_id,
            agent_id,
        })
        .await?
        .into_inner();
    Ok(Json(Data { data: agent.into() }))
}

/// `Option<Option<T>>` from a field that may be absent (`None`), `null` (`Some(None)`) or set.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Only the fields present change.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAgent {
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    slug: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
    #[schema(
        max_length = 1000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    description: Option<String>,
    #[schema(
        max_length = 16384,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    system_prompt: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]*$")]
    model: Option<String>,
    /// `null` clears it (the provider's default).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(minimum = 0, maximum = 2, value_type = Option<f32>)]
    temperature: Option<Option<f32>>,
    /// Replaces the list.
    #[schema(max_items = 32)]
    tools: Option<Vec<ToolName>>,
    /// Replaces the list.
    #[schema(max_items = 8)]
    mcp_servers: Option<Vec<McpServerBody>>,
}

/// `PATCH /v1/workspaces/{w}/agents/{a}` → 200 with the agent (owners and admins).
#[utoipa::path(
    patch,
    operation_id = "updateAgent",
    path = "/workspaces/{workspace_id}/agents/{agent_id}",
    tag = "agents",
    request_body = UpdateAgent,
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("agent_id" = String, Path),
    ),
    responses(
        (status = 200, description = "the changed agent", body = Data<Agent>),
        (status = 403, description = "`ADMIN_REQUIRED`", body = ErrorBody),
        (status = 409, description = "`AGENT_SLUG_TAKEN`", body = ErrorBody),
        (status = 422, description = "a field is not valid", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, agent_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<Data<Agent>>, ApiError> {
    require_admin(caller.workspace(&workspace_id)?, "may change its agents")?;
    let agent = state
        .conversations
        .clone()
        .update_agent(conv::UpdateAgentRequest {
            workspace_id,
            agent_id,
            slug: body.slug,
            name: body.name,
            description: body.description,
            system_prompt: body.system_prompt,
            model: body.model,
            temperature: body.temperature.flatten(),
            clear_temperature: body.temperature == Some(None),
            tools: body.tools.map(|names| conv::ToolNames {
                names: tool_names(names),
            }),
            mcp_servers: body.mcp_servers.map(|servers| conv::McpServers {
                servers: mcp_servers(servers),
            }),
        })
        .await?
        .into_inner();
    Ok(Json(Data { data: agent.into() }))
}

/// `DELETE /v1/workspaces/{w}/agents/{a}` → 204: archives the agent (owners and admins). It
/// answers no new message; its conversations and messages stay. Idempotent.
#[utoipa::path(
    delete,
    operation_id = "archiveAgent",
    path = "/workspaces/{workspace_id}/agents/{agent_id}",
    tag = "agents",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("agent_id" = String, Path),
    ),
    responses(
        (status = 204, description = "archived"),
        (status = 403, description = "`ADMIN_REQUIRED`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, agent_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(caller.workspace(&workspace_id)?, "may change its agents")?;
    state
        .conversations
        .clone()
        .archive_agent(conv::ArchiveAgentRequest {
            workspace_id,
            agent_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
