//! keepalived without scripts: read its `notify_fifo`, follow one VRRP instance or sync
//! group, and keep a `track_file` that stops keepalived from making this node master
//! before it holds a complete copy of the primary's table.
//!
//! keepalived writes one line per transition to the FIFO (keepalived.conf(5),
//! `notify_fifo`): `INSTANCE "VI_1" MASTER 100`, `GROUP "G1" BACKUP 0`, with states
//! MASTER, BACKUP, FAULT and STOP (and MASTER_RX_LOWER_PRI, ignored here).
//!
//! The track file holds a number. With `weight 0` in keepalived's `track_file` block a
//! non-zero value puts the instance in FAULT: ctsync writes `0` when ready and `1` when not.
//! A second file, `stale_file`, says `1` while no primary peer was heard from for
//! `stale_after_secs`: with a negative `weight` keepalived lowers the node's priority by
//! it, so a backup whose copy ages behind a cut link is the less preferred candidate but
//! still a candidate (keepalived.conf(5), `track_file`).

use std::path::Path;

use ctsync_core::Role;
use serde::Deserialize;

/// `[keepalived]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keepalived {
    /// keepalived's `notify_fifo` path (ctsync creates the FIFO if it is missing).
    pub notify_fifo: Option<std::path::PathBuf>,
    /// Follow this VRRP instance …
    pub instance: Option<String>,
    /// … or this sync group.
    pub group: Option<String>,
    /// Where to write readiness for keepalived's `track_file` (`0` ready, `1` not).
    pub track_file: Option<std::path::PathBuf>,
    /// Where to write whether this node's copy is stale (`1`: a primary peer was not
    /// heard from for `stale_after_secs`, `0` otherwise), for a second `track_file` with
    /// a negative `weight`: a backup cut off from the primary becomes the less preferred
    /// candidate, never FAULT on that alone.
    pub stale_file: Option<std::path::PathBuf>,
    /// Seconds without a word from a primary peer after which the copy counts as stale
    /// (1 to 86,400; with `stale_file`).
    pub stale_after_secs: Option<u64>,
}

/// What a FIFO line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A VRRP instance.
    Instance,
    /// A sync group.
    Group,
}

/// One parsed FIFO line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Instance or group.
    pub subject: Subject,
    /// Its name.
    pub name: String,
    /// The role the new state means for ctsync (`None` for states that mean none).
    pub role: Option<Role>,
}

/// Parse a `notify_fifo` line; `None` for lines that are not transitions.
pub fn parse_line(line: &str) -> Option<Transition> {
    let line = line.trim();
    let (kind, rest) = line.split_once(' ')?;
    let subject = match kind {
        "INSTANCE" => Subject::Instance,
        "GROUP" => Subject::Group,
        _ => return None,
    };
    let rest = rest.strip_prefix('"')?;
    let (name, rest) = rest.split_once('"')?;
    let state = rest.split_whitespace().next()?;
    let role = match state {
        "MASTER" => Some(Role::Primary),
        "BACKUP" => Some(Role::Backup),
        "FAULT" | "STOP" => Some(Role::Fault),
        _ => None,
    };
    Some(Transition {
        subject,
        name: name.to_string(),
        role,
    })
}

impl Keepalived {
    /// The role a line means for this node, if it is about what we follow.
    pub fn role_for(&self, t: &Transition) -> Option<Role> {
        let ours = match t.subject {
            Subject::Instance => self.instance.as_deref() == Some(t.name.as_str()),
            Subject::Group => self.group.as_deref() == Some(t.name.as_str()),
        };
        if ours { t.role } else { None }
    }
}

/// Write readiness to the track file atomically (write, then rename).
pub(crate) fn write_track_file(path: &Path, ready: bool) -> std::io::Result<()> {
    write_value(path, u8::from(!ready))
}

/// Write `value` (one number and a newline) to a track file, atomically.
pub(crate) fn write_value(path: &Path, value: u8) -> std::io::Result<()> {
    write_text(path, &format!("{value}\n"))
}

/// Write `text` to `path` atomically (a file beside it, renamed over it).
pub(crate) fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Create the FIFO if nothing is at `path` yet.
pub(crate) fn ensure_fifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Refuse a `notify_fifo` that someone other than root could write: whoever writes it
/// decides this node's role. It must be a FIFO owned by root (or by the daemon's own
/// user) that neither its group nor others may write. Readable by others is allowed:
/// keepalived itself creates the FIFO with mode 0644.
pub(crate) fn check_fifo(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("keepalived's notify_fifo {}: {e}", path.display()))?;
    if !meta.file_type().is_fifo() {
        anyhow::bail!(
            "keepalived's notify_fifo {} is not a FIFO: remove it (ctsync or keepalived creates the FIFO)",
            path.display()
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        anyhow::bail!(
            "keepalived's notify_fifo {} is owned by uid {}, not root: its owner could change this node's role; run `chown root {}`",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "keepalived's notify_fifo {} is writable by group or others (mode {mode:o}): they could change this node's role; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_others_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ctsync-fifo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("notify.fifo");
        ensure_fifo(&fifo).unwrap();
        let mode = |m| std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(m));
        mode(0o600).unwrap();
        check_fifo(&fifo).unwrap();
        mode(0o644).unwrap();
        check_fifo(&fifo).expect("keepalived's own mode");
        mode(0o622).unwrap();
        let e = format!("{:#}", check_fifo(&fifo).unwrap_err());
        assert!(
            e.contains(fifo.to_str().unwrap()) && e.contains("mode 622") && e.contains("chmod 600"),
            "{e}"
        );
        mode(0o600).unwrap();
        std::os::unix::fs::chown(&fifo, Some(65534), None)
            .expect("chown needs root: run the tests as root (README, Tests)");
        let e = format!("{:#}", check_fifo(&fifo).unwrap_err());
        assert!(e.contains("uid 65534") && e.contains("chown root"), "{e}");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, "").unwrap();
        let e = format!("{:#}", check_fifo(&fifo).unwrap_err());
        assert!(e.contains("not a FIFO"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_keepalived_lines() {
        assert_eq!(
            parse_line("INSTANCE \"VI_1\" MASTER 100\n"),
            Some(Transition {
                subject: Subject::Instance,
                name: "VI_1".into(),
                role: Some(Role::Primary)
            })
        );
        assert_eq!(
            parse_line("GROUP \"G1\" BACKUP 0").map(|t| t.role),
            Some(Some(Role::Backup))
        );
        assert_eq!(
            parse_line("INSTANCE \"VI 2\" FAULT 0").map(|t| t.name),
            Some("VI 2".into())
        );
        assert_eq!(
            parse_line("INSTANCE \"VI_1\" MASTER_RX_LOWER_PRI 100").map(|t| t.role),
            Some(None)
        );
        for junk in [
            "",
            "HELLO",
            "INSTANCE VI_1 MASTER",
            "INSTANCE \"VI_1",
            "GROUP \"G\"",
        ] {
            assert_eq!(parse_line(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn follows_only_its_instance_or_group() {
        let k = Keepalived {
            notify_fifo: None,
            instance: None,
            group: Some("G1".into()),
            track_file: None,
            stale_file: None,
            stale_after_secs: None,
        };
        let l = |s| parse_line(s).unwrap();
        assert_eq!(k.role_for(&l("GROUP \"G1\" MASTER 0")), Some(Role::Primary));
        assert_eq!(k.role_for(&l("GROUP \"G2\" MASTER 0")), None);
        assert_eq!(k.role_for(&l("INSTANCE \"G1\" MASTER 0")), None);
    }
}
