//! runtime-proxy's metrics: runtimes by state and turns in flight, read from the registry at
//! every scrape.

use std::sync::LazyLock;

use crawbl_infra::metrics::{Gauge, GaugeVec, registry, to_i64};

use crate::registry::Registry;

static RUNTIMES: LazyLock<GaugeVec> = LazyLock::new(|| {
    registry().gauge_vec(
        "crawbl_runtimes",
        "Workspace runtimes known to runtime-proxy, by state (provisioning, ready, failed, stopped).",
        &["state"],
    )
});

static TURNS: LazyLock<Gauge> = LazyLock::new(|| {
    registry().gauge(
        "crawbl_runtime_turns_in_flight",
        "Agent turns being forwarded to runtimes now.",
    )
});

/// Reports `runtimes` at every scrape, zeros once it is gone.
pub fn watch(runtimes: &Registry) {
    let runtimes = runtimes.downgrade();
    registry().on_scrape("runtime_proxy", move || {
        let census = runtimes
            .upgrade()
            .map(|runtimes| runtimes.census())
            .unwrap_or_default();
        for (state, count) in [
            ("provisioning", census.provisioning),
            ("ready", census.ready),
            ("failed", census.failed),
            ("stopped", census.stopped),
        ] {
            RUNTIMES.with(&[state]).set(to_i64(count));
        }
        TURNS.set(to_i64(census.turns));
    });
}
