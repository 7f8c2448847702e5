//! This node's epoch (docs/PROTOCOL.md §3.4): larger than any epoch it used before, so
//! that its peers take it at once and no (key, nonce) pair of an earlier run repeats.
//! The wall clock alone cannot promise that (NTP steps it back at boot; a unit may start
//! before time sync), so the last epoch is kept in a state directory and the next one is
//! above both it and the clock. Its low 24 bits are random, so that a VM restored twice
//! from one snapshot does not repeat an epoch either. Peers also take a lower epoch
//! after it answers a fresh challenge (a state directory lost, a new machine), so this
//! file is a speed-up and a nonce guard, never a lock-out.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the epoch is kept: systemd's `$STATE_DIRECTORY` (`StateDirectory=ctsync` in
/// the unit), else `/var/lib/ctsync`.
pub(super) fn state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            // systemd lists several directories separated by colons; ours is the first.
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/ctsync"))
}

/// The epoch after `last` (none: no earlier run known) at wall-clock second `wall`, with
/// random low bits `random24`: seconds above both the clock and the last epoch's.
pub(super) fn next(last: Option<u64>, wall: u64, random24: u32) -> u64 {
    let secs = last.map_or(0, |e| (e >> 24) + 1).max(wall);
    (secs << 24) | u64::from(random24 & 0x00ff_ffff)
}

/// Choose this run's epoch and record it in `dir` before it is used. A missing or
/// unreadable record only costs the guarantee against a clock stepped back (said in the
/// returned warning); a record that cannot be written likewise.
pub(super) fn choose(dir: &Path, wall: u64, random24: u32) -> (u64, Option<String>) {
    let file = dir.join("epoch");
    let (last, mut warning) = match fs::read_to_string(&file) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(e) => (Some(e), None),
            Err(_) => (
                None,
                Some(format!(
                    "{} does not hold an epoch ({:?}): the clock alone chooses this run's",
                    file.display(),
                    s.trim()
                )),
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
        Err(e) => (
            None,
            Some(format!(
                "reading {}: {e}: the clock alone chooses this run's epoch",
                file.display()
            )),
        ),
    };
    let epoch = next(last, wall, random24);
    if let Err(e) = record(dir, "epoch", &epoch.to_string(), (0o700, 0o600)) {
        warning = Some(format!(
            "{e:#}: a restart with the clock stepped back will need a challenge round to be taken"
        ));
    }
    (epoch, warning)
}

/// Write `line` as the record `name` in `dir` (created with the first of `modes`, the
/// file with the second) durably: a temporary file, synced, renamed over the record, so
/// that a crash leaves the old record or the new one, never half of one.
pub(super) fn record(dir: &Path, name: &str, line: &str, modes: (u32, u32)) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(modes.0)
        .create(dir)
        .with_context(|| format!("creating the directory {}", dir.display()))?;
    let tmp = dir.join(format!("{name}.new"));
    let file = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(modes.1)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, &file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_above_the_last_one_and_the_clock() {
        let wall = 1_800_000_000;
        // No record: the clock.
        assert_eq!(next(None, wall, 5) >> 24, wall);
        // The clock stepped back an hour: still above the last epoch.
        let last = next(None, wall, 0xff_ffff);
        let after = next(Some(last), wall - 3600, 0);
        assert!(after > last);
        // Restarted twice within a second: above too.
        assert!(next(Some(after), wall - 3600, 0) > after);
        // Random bits above 24 are ignored.
        assert_eq!(next(None, 1, u32::MAX), (1 << 24) | 0xff_ffff);
    }

    #[test]
    fn the_epoch_is_recorded_and_the_next_run_starts_above_it() {
        let dir = std::env::temp_dir().join(format!("ctsync-epoch-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let wall = 1_800_000_000;
        let (first, w) = choose(&dir, wall, 1);
        assert_eq!(w, None);
        let (second, w) = choose(&dir, wall - 3600, 1);
        assert_eq!(w, None);
        assert!(
            second > first,
            "a clock an hour back still gives a larger epoch"
        );
        fs::write(dir.join("epoch"), "garbage").unwrap();
        let (third, w) = choose(&dir, wall, 1);
        assert!(w.is_some_and(|w| w.contains("does not hold an epoch")));
        assert_eq!(third >> 24, wall);
        let _ = fs::remove_dir_all(&dir);
    }
}
