//! Reading inputs (a path or `-` for stdin) and writing outputs atomically (a temporary file renamed
//! into place), so a failed command never leaves a half-written file behind.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::Path;

/// Reads a text input; `-` is stdin. Returns the text and the name to use in messages.
pub fn read_text(path: &str) -> Result<(String, String)> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        Ok((s, "<stdin>".to_string()))
    } else {
        let s = std::fs::read_to_string(path).with_context(|| format!("{path}: cannot read"))?;
        Ok((s, path.to_string()))
    }
}

/// Writes to `path` (or stdout when `None` or `-`).
pub fn write_output(path: Option<&Path>, text: &str) -> Result<()> {
    match path {
        None => write_stdout(text),
        Some(p) if p.as_os_str() == "-" => write_stdout(text),
        Some(p) => write_atomic(p, text.as_bytes()),
    }
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`kiln ... | head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing stdout"),
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    std::fs::rename(&tmp, path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("{}: cannot write", path.display()))
}
