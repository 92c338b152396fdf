//! Running the `kiln` binary in end-to-end tests.

use std::process::{Command, Output};

/// Runs `kiln` with `args`.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().unwrap()
}

/// Asserts success; returns (stdout, stderr).
pub fn ok(out: Output) -> (String, String) {
    let (so, se) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "failed: {se}");
    (so, se)
}

/// Exit code 1, an `error:` message (no panic) that mentions every `needle`; returns it.
pub fn fails_with(out: Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    err
}

/// [`fails_with`], and the message is a single line.
pub fn fails_with_one_line(out: Output, needles: &[&str]) -> String {
    let err = fails_with(out, needles);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}
