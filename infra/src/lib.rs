//! Infrastructure every Crawbl component shares: configuration from the environment, logging,
//! metrics, shutdown, gRPC serving with health and reflection, database pools, the event bus, and
//! the TLS configuration of outgoing HTTPS clients.
//! Nothing here knows about users, conversations or agents.

pub mod bus;
pub mod config;
pub mod db;
pub mod grpc;
pub mod jws;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod presence;
pub mod redis_client;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
