//! End-to-end tests: the real `crawbl` binary's components as separate processes (or the
//! all-in-one embedded stack), real Postgres, real Redis, real Socket.IO clients.

#[macro_use]
mod support;

mod accounts;
mod agents;
mod auth_and_tenancy;
mod chat;
mod conversations;
mod faults;
mod hostile;
mod limits;
mod operability;
mod realtime;
mod replicas;
mod runtime_lifecycle;
mod slow_clients;
mod turn_control;
mod walking_skeleton;
