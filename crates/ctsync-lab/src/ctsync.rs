//! The ctsync under test, driven from outside as an operator drives it: its binary
//! (`ctsync run`, `ctsync keygen`), its configuration file and its control socket
//! (one request line, one JSON reply line: `crates/ctsync/src/control.rs`).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::wait;

/// When a backup writes the flows its peers replicate (the config's `[sync] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// As they arrive (`hot-standby`, ctsync's default).
    #[default]
    HotStandby,
    /// When it becomes primary (`commit`).
    Commit,
}

impl Mode {
    /// The value of `[sync] mode` in a configuration file.
    pub fn config_value(self) -> &'static str {
        match self {
            Mode::HotStandby => "hot-standby",
            Mode::Commit => "commit",
        }
    }
}

/// Send `request` to the ctsync whose control socket is `socket`; its reply, or its
/// refusal as an error.
pub fn request(socket: &Path, request: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("cannot reach ctsync at {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .context("reading ctsync's reply")?;
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).context("ctsync's reply is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!("ctsync refused `{request}`: {e}");
    }
    Ok(v)
}

/// Write a new cluster key to `path` (mode 0600), made by `ctsync keygen`.
pub fn write_key(bin: &Path, path: &Path) -> Result<()> {
    let out = Command::new(bin)
        .arg("keygen")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} keygen", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`{} keygen` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::write(path, &out.stdout).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// How to start a daemon besides its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// systemd's NOTIFY_SOCKET, if any (see [`answers_within`] to wait until it is up).
    pub notify: Option<&'a Path>,
    /// Its state directory (`$STATE_DIRECTORY`: where it keeps its epoch), inside the
    /// lab's own directory so that nothing is left on the host.
    pub state: &'a Path,
    /// Run it with Debian's libfaketime preloaded, its wall clock offset by this (e.g.
    /// `-1h`; the monotonic clock is left alone). Preloaded rather than through the
    /// `faketime` command, which forks: the child would then not be the daemon.
    pub faketime: Option<&'a str>,
}

/// Debian's libfaketime (package `faketime`), wherever the architecture puts it.
fn libfaketime() -> Result<std::path::PathBuf> {
    let lib = Path::new("/usr/lib");
    for dir in fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))? {
        let p = dir?.path().join("faketime/libfaketime.so.1");
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("libfaketime.so.1 not found under /usr/lib/*/faketime: apt-get install faketime")
}

/// Start `ctsync run --config cfg`, its stderr to `log`, as `how` says.
pub fn spawn_run(bin: &Path, cfg: &Path, log: fs::File, how: Launch<'_>) -> Result<Child> {
    let mut cmd = Command::new(bin);
    if let Some(offset) = how.faketime {
        cmd.env("LD_PRELOAD", libfaketime()?)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    cmd.arg("run")
        .arg("--config")
        .arg(cfg)
        .env("STATE_DIRECTORY", how.state)
        // Its runtime directory (where it keeps keepalived's last word for a restart)
        // beside the state directory, in the lab's own directory likewise.
        .env("RUNTIME_DIRECTORY", how.state.with_extension("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(n) = how.notify {
        cmd.env("NOTIFY_SOCKET", n);
    }
    cmd.spawn()
        .with_context(|| format!("starting {} run", bin.display()))
}

/// Whether the control socket `socket` answers a status request within `limit`.
pub fn answers_within(socket: &Path, limit: Duration) -> Result<bool> {
    Ok(wait(limit, || request(socket, "status").is_ok())?.is_some())
}
