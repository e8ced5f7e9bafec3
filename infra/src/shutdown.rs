//! One shutdown signal for every server in the process, and the bound on how long a server
//! drains once it is given.
//!
//! On SIGTERM (or Ctrl-C) every server stops accepting at once and gets [`DRAIN_BOUND`] to finish
//! the requests in flight; what is still running then is cut off, so a stuck client (a long poll,
//! a gRPC watch) cannot hold the process up forever.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a server keeps serving the requests in flight after it stopped accepting. Longer
/// than the conversation service's grace for agent turns, so a `?wait=true` send whose turn
/// finishes in that grace still gets its answer.
pub const DRAIN_BOUND: Duration = Duration::from_secs(20);

/// Runs `server`, which stops accepting when `shutdown` is cancelled and returns once its
/// requests in flight are done, but gives up on it `bound` after `shutdown` (dropping it closes
/// whatever connections are left). `None`: it was given up on.
pub async fn drain_within<T>(
    server: impl Future<Output = T>,
    shutdown: &CancellationToken,
    bound: Duration,
) -> Option<T> {
    let given_up = async {
        shutdown.cancelled().await;
        tokio::time::sleep(bound).await;
    };
    tokio::select! {
        biased;
        output = server => Some(output),
        () = given_up => None,
    }
}

/// A token that is cancelled on SIGINT (Ctrl-C) or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
