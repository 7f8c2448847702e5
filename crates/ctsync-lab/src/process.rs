//! Commands and children of a lab: running a command for its output, waiting for a
//! condition, stopping a child, and Ctrl-C (a lab interrupted is still removed).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turn SIGINT and SIGTERM into [`interrupted`] (for `ctsync demo`: Ctrl-C removes the
/// lab instead of leaving it behind).
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Run a command; on failure, its stderr in the error.
pub(crate) fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wait at most `limit` for `cond`, checking every 10 ms; the time it took.
pub fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if interrupted() {
            bail!("interrupted");
        }
        if cond() {
            return Ok(Some(start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

/// Sleep, but give up early (with an error) on Ctrl-C.
pub fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted() {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    Ok(())
}

/// Wait up to `grace` for a signalled child, then kill it (and its group, if it has one).
pub(crate) fn stop_child(c: &mut Child, group: Option<i32>, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match group {
        // SAFETY: a process group this lab created.
        Some(g) => unsafe {
            libc::killpg(g, libc::SIGKILL);
        },
        None => {
            let _ = c.kill();
        }
    }
    let _ = c.wait();
}

/// Kill a child that leads its own process group (keepalived), and its group, with
/// SIGKILL (a crash); reap it.
pub(crate) fn kill_group(c: &mut Child) {
    // SAFETY: a process group this lab created (the child leads it).
    unsafe { libc::killpg(c.id() as i32, libc::SIGKILL) };
    let _ = c.wait();
}

/// Stop a child that leads its own process group (keepalived): SIGTERM to the group,
/// and the group killed if the child has not ended after `grace`.
pub(crate) fn stop_group(c: &mut Child, grace: Duration) {
    let g = c.id() as i32;
    // SAFETY: a process group this lab created (the child leads it).
    unsafe { libc::killpg(g, libc::SIGTERM) };
    stop_child(c, Some(g), grace);
}

/// Stop a ctsync this lab started: SIGTERM, then SIGKILL after `grace`.
pub(crate) fn terminate(c: &mut Child, grace: Duration) {
    // SAFETY: signalling a child this lab started, by its pid.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    stop_child(c, None, grace);
}

/// Stop daemons this lab started: SIGTERM to all first, then each waited for (SIGKILL
/// after 5 s).
pub(crate) fn stop_daemons(daemons: &mut [Child]) {
    for c in daemons.iter_mut() {
        // SAFETY: signalling a daemon this lab started, by its pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in daemons.iter_mut() {
        stop_child(c, None, Duration::from_secs(5));
    }
}

/// The logs `DIR/NAME.log` of the nodes `names`, for a failure message.
pub(crate) fn node_logs<'a>(
    dir: &std::path::Path,
    names: impl IntoIterator<Item = &'a String>,
) -> String {
    names
        .into_iter()
        .map(|ns| {
            format!(
                "--- {ns}:\n{}",
                std::fs::read_to_string(dir.join(format!("{ns}.log"))).unwrap_or_default()
            )
        })
        .collect()
}
