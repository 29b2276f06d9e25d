//! The referee: Microsoft's own Python SDK (`azure-servicebus` from PyPI) runs
//! `tests/python/referee.py` against an in-process peer. Any disagreement between the SDK and
//! the peer fails this test. Skipped (with a message) only where no `python3` exists; the SDK is
//! installed into a cache by `scripts/python-sdk.sh`, and a failed install fails the test.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use servicebus_peer::QueueConfig;

use common::{queue_name, start_peer};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread")]
async fn microsoft_python_sdk_agrees_with_the_peer() {
    let Some(python) = servicebus_peer::referee::python_sdk().await else { return };

    let queue = queue_name("py");
    let session_queue = queue_name("py-sessions");
    let short_lock_queue = queue_name("py-short");
    let peer = start_peer(vec![
        QueueConfig::new(&queue),
        QueueConfig::new(&session_queue).sessions(true),
        QueueConfig::new(&short_lock_queue).lock_duration(Duration::from_secs(2)),
    ])
    .await;

    let run = tokio::process::Command::new(&python)
        .arg(repository().join("servicebus-peer/tests/python/referee.py"))
        .env("SB_CONNECTION_STRING", peer.connection_string())
        .env("SB_QUEUE", &queue)
        .env("SB_SESSION_QUEUE", &session_queue)
        .env("SB_SHORT_LOCK_QUEUE", &short_lock_queue)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the referee finishes within 5 minutes")
        .expect("the referee starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Python SDK disagrees with the peer:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "the referee ran no checks:\n{stdout}");
    // What the SDK did is also what the peer holds: every check leaves its queues empty.
    for entity in [&queue, &session_queue, &short_lock_queue] {
        assert_eq!(peer.count(entity), 0, "{entity} is empty after the referee");
    }
    peer.shutdown().await;
}
