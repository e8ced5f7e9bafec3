//! What the REST side ([`crate::rest`]) and the socket side ([`crate::realtime`]) both stand on:
//! who may do what ([`access`], [`auth`]), the sockets of every node ([`cluster`], [`rooms`]),
//! limits, cross-origin access, errors, JSON shapes, health and metrics. Nothing here imports either side.

pub mod access;
pub mod auth;
pub mod cluster;
pub mod cors;
pub mod error;
pub mod health;
pub mod json;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod rooms;
pub mod sending;
