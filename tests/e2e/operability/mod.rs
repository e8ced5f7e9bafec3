//! What operators rely on (issue 7): traces, metrics, health, graceful shutdown and the API
//! documents; and the console's operations API and cross-origin access (issue 20).

mod api_docs;
mod health;
mod metrics;
mod operations;
mod shutdown;
mod traces;
