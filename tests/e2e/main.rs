//! End-to-end tests: the real `crawbl` binary's components as separate processes (or the
//! all-in-one embedded stack), real Postgres, real Redis, real Socket.IO clients.

#[macro_use]
mod support;

/// The fake push providers of the push crate's tests (FCM, APNs, Web Push), shared.
#[path = "../../services/push/tests/support/mod.rs"]
mod push_support;

mod accounts;
mod agents;
mod auth_and_tenancy;
mod chat;
mod console;
mod conversations;
mod faults;
mod hostile;
mod limits;
mod operability;
mod push;
mod realtime;
mod replicas;
mod runtime_lifecycle;
mod slow_clients;
mod turn_control;
mod walking_skeleton;
