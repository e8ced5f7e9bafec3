//! The Socket.IO namespace and the names of its rooms, which every edge node must agree on.

pub const NAMESPACE: &str = "/v1";
pub const WORKSPACE_ROOM_PREFIX: &str = "workspace:";

/// The room of a workspace's sockets.
pub fn workspace_room(workspace_id: &str) -> String {
    format!("{WORKSPACE_ROOM_PREFIX}{workspace_id}")
}

/// The room of every socket of a user.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The room of a user's sockets that follow all of the user's workspaces (connected without
/// `auth.workspaceId`): they join workspaces the user is added to.
pub fn following_room(user_id: &str) -> String {
    format!("user:{user_id}:all")
}

/// The room of the sockets authenticated by one session's access tokens.
pub fn session_room(session_id: &str) -> String {
    format!("session:{session_id}")
}

/// The room of the sockets authenticated by one API key.
pub fn api_key_room(api_key_id: &str) -> String {
    format!("apikey:{api_key_id}")
}
