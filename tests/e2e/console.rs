//! The web console (`/console`) in a real browser against the real stack: Debian's Chromium,
//! headless, driven by playwright-core (`tests/js/console.mjs`). Screenshots of every step are
//! kept in `<target>/console-screenshots/` (the README's picture is one of them).

use std::path::PathBuf;

use crate::support::{Options, Stack, js};

/// Where the screenshots go: beside the test binaries' temporary folder, in the target folder.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), std::path::Path::to_path_buf)
        .join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_chats_stops_reads_and_catches_up_in_the_console() {
    // Slow enough that a reply streams over many frames and can be stopped midway.
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 40,
        ..Options::default()
    })
    .await;
    let screenshots = screenshot_dir();
    let report = js::run_console(&stack.edges[0], &screenshots).await;

    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|step| step.as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "signed up",
            "sent with the keyboard and watched the reply stream",
            "usage shown in the header after a turn",
            "tool call card and mention",
            "stopped a reply",
            "a send over the quota is refused plainly, with when it resets",
            "unread badge on both pages",
            "read on the second page; badge cleared on both",
            "edited on page A, seen edited on page B",
            "deleted after confirming; tombstone on both pages",
            "offline banner",
            "caught up after reconnecting",
            "event inspector",
            "agents page, after refreshing a spoiled token",
            "operations view, with the month's usage",
            "a second workspace created in the console; chatted in it",
            "a member signs in and types: agents read-only, operations for owners",
            "a member added to a workspace sees it appear without a reload",
            "older conversations loaded past the first page",
            "older messages loaded past the first page",
            "a slow view never covers the one opened after it",
            "accessibility",
        ],
        "{report}"
    );
    let lengths = report["streamLengths"].as_array().expect("lengths");
    assert!(lengths.len() >= 4, "{report}");
    assert!(report["cancelledLength"].as_u64() > Some(0), "{report}");
    assert!(
        report["replayed"]
            .as_array()
            .is_some_and(|events| !events.is_empty()),
        "{report}"
    );
    for shot in [
        "02-conversation",
        "05b-edited-on-b",
        "05c-deleted",
        "06-offline",
        "07-caught-up",
        "13-member-added",
    ] {
        let path = screenshots.join(format!("{shot}.png"));
        let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{path:?} is not a PNG");
    }
}
