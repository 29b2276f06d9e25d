//! `AMQP_URL` with several URLs, as an operator gives a cluster's nodes: the worker binary
//! connects to the first that answers, says which node it reached, and no password of any URL is
//! in its log, whether this service wrote the line or quoted a client library's or the broker's
//! error.

use lab::kit::worker::{WorkerProcess, worker_binary};
use lab::kit::*;
use std::time::Duration;

#[actix_rt::test]
async fn the_first_url_that_answers_is_used_and_no_password_of_any_url_is_logged() {
    let env = Sandbox::for_test().await;
    let mut settings = env.settings.clone();
    // The first node refuses the password, the second does not listen, the third answers.
    let refused = "Refused-Pw-1";
    let closed = "Closed%2FPw-2"; // percent-encoded: `Closed/Pw-2` once decoded
    settings.amqp.amqp_url =
        format!("amqp://guest:{refused}@127.0.0.1:5672/%2f,amqp://someone:{closed}@127.0.0.1:1/%2f,{}", amqp_url())
            .parse()
            .unwrap();
    // At debug, every failed attempt is logged with lapin's own error.
    let log = std::env::temp_dir().join(format!("op-broker-urls-{}.log", env.id));
    let worker = WorkerProcess::spawn(&worker_binary().unwrap(), &settings, Some("debug"), log.clone()).unwrap();
    worker.ready(Duration::from_secs(30)).await.unwrap();
    let (code, _) = worker.terminate().await;
    assert_eq!(code, Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let connected: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "connected to the broker")
        .map(|l| (l["role"].as_str().unwrap(), l["node"].as_str().unwrap()))
        .collect();
    assert!(connected.contains(&("consumer", "127.0.0.1:5672")), "{connected:?}");
    assert!(connected.contains(&("publisher", "127.0.0.1:5672")), "{connected:?}");
    let failed: Vec<_> = lines.iter().filter(|l| l["message"] == "broker node did not answer").collect();
    assert!(failed.iter().any(|l| l["node"] == "127.0.0.1:1"), "the closed port was tried: {failed:?}");
    assert!(text.contains("someone:***@127.0.0.1:1"), "the settings line shows the URLs masked");
    for password in [refused, closed, "Closed/Pw-2"] {
        assert!(!text.contains(password), "{password} is in the log:\n{text}");
    }
    let _ = std::fs::remove_file(log);
    env.cleanup().await;
}
