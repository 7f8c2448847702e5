//! The client side of the control socket: one request line, one JSON reply line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Send `request` to the daemon at `socket` and return its reply.
pub fn request(socket: &Path, request: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the daemon at {} (is `ctsync run` running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .context("reading the daemon's reply")?;
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).context("the daemon's reply is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!(
            "the daemon refused: {}",
            e.as_str().unwrap_or("unknown error")
        );
    }
    Ok(v)
}
