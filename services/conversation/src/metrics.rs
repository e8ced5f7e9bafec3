//! The conversation service's own metrics: what turns cost, by plan and model.

use std::sync::LazyLock;

use crawbl_infra::metrics::CounterVec;

use crate::db::TurnUsage;

static TOKENS: LazyLock<CounterVec> = LazyLock::new(|| {
    crawbl_infra::metrics::registry().counter_vec(
        "crawbl_tokens_total",
        "Tokens of agent turns, by workspace plan, model and direction (input or output).",
        &["plan", "model", "direction"],
    )
});

/// Counts a turn's tokens. Workspaces are not a label (unbounded); plans and models are few.
pub fn count_tokens(plan: &str, model: &str, usage: &TurnUsage) {
    let model = if model.is_empty() { "unknown" } else { model };
    TOKENS.with(&[plan, model, "input"]).add(usage.input_tokens);
    TOKENS
        .with(&[plan, model, "output"])
        .add(usage.output_tokens);
}
