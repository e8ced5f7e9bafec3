//! Which workspaces a socket counts in on this node. A workspace is followed on the bus while at
//! least one local socket counts in it ([`Fanout::track`]); each socket counts once per
//! workspace, from just before it joins the room (or starts a replay) until it leaves the room or
//! is dropped. Dropping is what ends the count on disconnect, whatever way the socket went (even
//! a handshake that failed after its rooms were counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use socketioxide::extract::SocketRef;

use super::fanout::{Fanout, Workspace};
use crate::shared::cluster::Adapter;

pub struct Presence {
    fanout: Arc<Fanout>,
    /// Workspace id → whether the socket is in the room yet (not while it replays).
    workspaces: Mutex<HashMap<String, bool>>,
    evicted: AtomicBool,
}

impl Presence {
    pub fn new(fanout: Arc<Fanout>) -> Arc<Self> {
        Arc::new(Self {
            fanout,
            workspaces: Mutex::default(),
            evicted: AtomicBool::new(false),
        })
    }

    /// The presence of a socket that passed the handshake.
    pub fn of(socket: &SocketRef<Adapter>) -> Option<Arc<Self>> {
        socket.extensions.get::<Arc<Self>>()
    }

    /// Counts the socket in `workspace_id` (once) and waits until the node follows the workspace
    /// and knows its position.
    pub async fn track(&self, workspace_id: &str) -> Arc<Workspace> {
        let newly = {
            let mut workspaces = lock(&self.workspaces);
            if workspaces.contains_key(workspace_id) {
                false
            } else {
                workspaces.insert(workspace_id.to_owned(), false);
                true
            }
        };
        let workspace = if newly {
            self.fanout.track(workspace_id)
        } else {
            match self.fanout.tracked(workspace_id) {
                Some(workspace) => workspace,
                // Cannot happen while this socket counts; count again rather than fail.
                None => self.fanout.track(workspace_id),
            }
        };
        self.fanout.ready(&workspace).await;
        workspace
    }

    /// The socket is now in `workspace_id`'s room.
    pub fn joined(&self, workspace_id: &str) {
        if let Some(joined) = lock(&self.workspaces).get_mut(workspace_id) {
            *joined = true;
        }
    }

    /// Whether the socket counts in `workspace_id` (in the room or replaying into it).
    pub fn counts_in(&self, workspace_id: &str) -> bool {
        lock(&self.workspaces).contains_key(workspace_id)
    }

    /// The workspaces whose rooms the socket is in.
    pub fn joined_workspaces(&self) -> Vec<String> {
        lock(&self.workspaces)
            .iter()
            .filter(|(_, joined)| **joined)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The socket no longer counts in `workspace_id`; whether it did.
    pub fn untrack(&self, workspace_id: &str) -> bool {
        let counted = lock(&self.workspaces).remove(workspace_id).is_some();
        if counted {
            self.fanout.untrack(workspace_id);
        }
        counted
    }

    pub fn untrack_all(&self) {
        let workspaces: Vec<String> = lock(&self.workspaces).drain().map(|(id, _)| id).collect();
        for workspace_id in workspaces {
            self.fanout.untrack(&workspace_id);
        }
    }

    /// Marks the socket as being evicted; false if it already was.
    pub fn evict(&self) -> bool {
        !self.evicted.swap(true, Ordering::AcqRel)
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.untrack_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
