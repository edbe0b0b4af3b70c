//! Helpers shared by the end-to-end tests that run the `jasper` binary.
#![allow(dead_code)]

use std::process::Command;

/// The `jasper` binary under test.
pub fn jasper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jasper"))
}

/// A per-process temporary path.
pub fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("jasper-test-{}-{name}", std::process::id()))
}

/// Run `jasper ARGS --json FILE EXTRA`, require success, and return the
/// JSON report and stdout (the report file is removed).
pub fn run_local(
    args: &[&str],
    json: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> (serde_json::Value, String) {
    let out = jasper()
        .args(args)
        .arg("--json")
        .arg(json)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    (v, stdout)
}
