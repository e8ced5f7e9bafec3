//! What operators rely on (issue 7): traces, metrics, health, graceful shutdown, and the API
//! documents.

mod api_docs;
mod health;
mod metrics;
mod shutdown;
mod traces;
