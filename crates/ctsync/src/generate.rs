//! `ctsync generate`: the man pages and shell completions, written from the command line
//! definition itself, so that they cannot drift from `--help`. The Debian package
//! (`scripts/package.sh`) calls it; a module of the binary, not of the library.

use std::path::Path;

use anyhow::{Context, Result};

/// What `ctsync generate` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum What {
    /// One man page per command (`ctsync.8`, `ctsync-run.8`, …), hidden commands left out.
    Man,
    /// Completions for bash (`ctsync.bash`), zsh (`_ctsync`) and fish (`ctsync.fish`).
    Completions,
}

/// Write `what` for `cmd` into `dir` (created if missing); the files written.
pub(crate) fn write(what: What, cmd: clap::Command, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let written = match what {
        What::Man => man_pages(cmd, dir),
        What::Completions => completions(cmd, dir),
    };
    written.with_context(|| format!("writing {what:?} into {}", dir.display()))
}

/// Section 8 (system administration): the binary is installed in /usr/sbin, and Debian
/// policy (§12.1) puts the pages of sbin commands there.
const SECTION: &str = "8";

fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn each(
        cmd: clap::Command,
        dir: &Path,
        out: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            each(sub.clone(), dir, out)?;
        }
        let page = clap_mangen::Man::new(cmd)
            .section(SECTION)
            .manual("System Administration");
        out.push(page.generate_to(dir)?);
        Ok(())
    }
    // Built, so that each subcommand is named `ctsync-run` and so on; `help` is clap's.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    each(cmd, dir, &mut out)?;
    Ok(out)
}

fn completions(mut cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| clap_complete::generate_to(shell, &mut cmd, &name, dir))
        .collect()
}
