//! Microsoft's own client as the referee of tests: the Python SDK `azure-servicebus` (PyPI),
//! installed once into a private venv by `scripts/python-sdk.sh`.

use std::path::PathBuf;
use std::process::Stdio;

/// The venv's python with azure-servicebus, installing it first if needed; `None`, with a
/// message on stderr, only when `python3` is missing. A failed install panics: a referee that
/// cannot run must not pass.
pub async fn python_sdk() -> Option<String> {
    let has_python = std::process::Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_python {
        eprintln!("SKIPPED: python3 is not installed, so Microsoft's azure-servicebus SDK cannot referee");
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/python-sdk.sh");
    let install = tokio::process::Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("scripts/python-sdk.sh runs");
    assert!(install.status.success(), "installing azure-servicebus failed");
    Some(String::from_utf8(install.stdout).expect("a path").trim().to_owned())
}
