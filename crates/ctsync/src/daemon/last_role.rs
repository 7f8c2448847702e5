//! The role keepalived (or the operator) last gave this node, kept across a restart of
//! the daemon so that a restart on a serving primary changes nothing: the new daemon
//! starts as primary, never shortens the kernel's timers and never tells keepalived
//! that the node is not ready. It lives in systemd's `$RUNTIME_DIRECTORY`
//! (`RuntimeDirectory=ctsync` with `RuntimeDirectoryPreserve=yes` in the unit, else
//! `/run/ctsync`), which a reboot clears, as it clears keepalived's state: a record
//! never outlives the keepalived run it came from.
//!
//! At start the role comes from, in this order: what keepalived wrote into its
//! notify_fifo while no daemon read it (the newest word, see [`from_fifo`]), this
//! record, then `role` in the configuration.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ctsync_core::Role;

/// The runtime directory: systemd's `$RUNTIME_DIRECTORY` (its first entry), else
/// `/run/ctsync`.
pub(super) fn runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/run/ctsync"))
}

/// The record's file in `dir`.
pub(super) fn file(dir: &Path) -> PathBuf {
    dir.join("role")
}

/// The role recorded in `dir` for node `node` (`None`: no record, or one of another
/// node: a second daemon on the host, or this host under another name). A record that
/// cannot be read or does not hold a role is an error the caller logs; it then starts
/// as configured.
pub(super) fn read(dir: &Path, node: &str) -> Result<Option<Role>> {
    let path = file(dir);
    let text = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (role, of) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if of != node {
        return Ok(None);
    }
    role.parse::<Role>()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Record `role` of node `node` in `dir` (see `epoch::record`): `primary fw1`.
pub(super) fn write(dir: &Path, node: &str, role: Role) -> Result<()> {
    super::epoch::record(dir, "role", &format!("{role} {node}"), (0o755, 0o644))
}

/// The newest role among the lines keepalived wrote into its notify_fifo while no daemon
/// read them (keepalived holds the FIFO open for reading and writing, so its lines wait
/// in the pipe; each is one write below PIPE_BUF, so none is read in halves). `fifo`
/// must be non-blocking: this reads what is there and returns.
pub(super) fn from_fifo(
    fifo: &mut impl Read,
    role_of: impl Fn(&crate::keepalived::Transition) -> Option<Role>,
) -> std::io::Result<Option<Role>> {
    let mut waiting = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: a pipe holds 64 KiB by default, 1 MiB at most unless raised.
    for _ in 0..1024 {
        match fifo.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => waiting.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&waiting)
        .lines()
        .rev()
        .filter_map(crate::keepalived::parse_line)
        .find_map(|t| role_of(&t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_role_is_read_back_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ctsync-role-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(read(&dir, "fw1").unwrap(), None, "no record: none");
        write(&dir, "fw1", Role::Primary).unwrap();
        assert_eq!(read(&dir, "fw1").unwrap(), Some(Role::Primary));
        assert_eq!(
            read(&dir, "fw2").unwrap(),
            None,
            "another node's record is not this one's"
        );
        write(&dir, "fw1", Role::Backup).unwrap();
        assert_eq!(read(&dir, "fw1").unwrap(), Some(Role::Backup));
        fs::write(file(&dir), "primary\n").unwrap();
        assert_eq!(read(&dir, "fw1").unwrap(), None, "a record without a node");
        fs::write(file(&dir), "sideways fw1\n").unwrap();
        let e = read(&dir, "fw1").unwrap_err().to_string();
        assert!(e.contains("role") && e.contains("sideways"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_newest_line_about_our_group_wins() {
        let k: crate::keepalived::Keepalived = toml::from_str("group = \"G1\"").unwrap();
        let follow = |t: &crate::keepalived::Transition| k.role_for(t);
        let lines = "GROUP \"G1\" MASTER 0\nINSTANCE \"VI_1\" BACKUP 100\nGROUP \"G2\" FAULT 0\nGROUP \"G1\" BACKUP 0\n";
        assert_eq!(
            from_fifo(&mut lines.as_bytes(), follow).unwrap(),
            Some(Role::Backup)
        );
        assert_eq!(
            from_fifo(&mut "GROUP \"G2\" MASTER 0\n".as_bytes(), follow).unwrap(),
            None,
            "another group's word is not ours"
        );
        assert_eq!(from_fifo(&mut &b""[..], follow).unwrap(), None);
    }
}
