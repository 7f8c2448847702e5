//! What a lab creates on the host and must remove: its network namespaces
//! (`ctsy-TAG-PID-NAME`) and its working directory (`$TMPDIR/ctsy-TAG-PID`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::process::run;

/// A lab's namespaces and directory, removed on drop (namespaces first).
#[derive(Debug)]
pub(crate) struct Scratch {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
}

impl Scratch {
    /// The directory, made now; no namespace yet. Root only.
    pub(crate) fn new(tag: &str) -> Result<Scratch> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the lab needs root: it creates network namespaces");
        }
        let prefix = format!("ctsy-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch {
            prefix,
            dir,
            namespaces: Vec::new(),
        })
    }

    /// Create the namespace `ctsy-TAG-PID-name` with its loopback up; its full name.
    pub(crate) fn add_netns(&mut self, name: &str) -> Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Remove the namespace `ctsy-TAG-PID-name` made by [`Scratch::add_netns`].
    pub(crate) fn del_netns(&mut self, name: &str) -> Result<()> {
        let ns = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "del", &ns])?;
        self.namespaces.retain(|n| *n != ns);
        Ok(())
    }

    /// `ctsy-TAG-PID`, the start of every namespace's name.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
