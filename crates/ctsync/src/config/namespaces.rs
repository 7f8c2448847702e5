//! `[namespaces]`: one daemon replicating many network namespaces (a Neutron network
//! node's routers), each matched by name, each with its role from a state file or from
//! the notify FIFO of its own keepalived.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use ctsync_core::Role;

/// Where each namespace's role comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleSource {
    /// The file `state_file` names, as Neutron's keepalived state-change monitor writes
    /// it: `primary` (older: `master`), `backup` or `fault`.
    KeepalivedState,
    /// The FIFO `notify_fifo` names, where the namespace's own keepalived writes a line
    /// per transition (keepalived.conf(5), `notify_fifo`): every `INSTANCE` line sets the
    /// role (a router's keepalived runs one VRRP instance); `GROUP` lines are ignored.
    KeepalivedFifo,
}

/// `[namespaces]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// The namespaces replicated: their names in /run/netns match this, with one `*`;
    /// the text `*` matched is the namespace's id, the same on every node.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Where roles come from.
    pub role: RoleSource,
    /// Each namespace's state file, `{id}` standing for its id (`role =
    /// "keepalived-state"`).
    pub state_file: Option<String>,
    /// Each namespace's keepalived `notify_fifo`, `{id}` standing for its id (`role =
    /// "keepalived-fifo"`); ctsync creates the FIFO when the namespace appears.
    pub notify_fifo: Option<String>,
    /// Each namespace's readiness for a `track_file` of its keepalived, `{id}` standing
    /// for its id: `0` once the namespace could take over without losing flows, `1`
    /// before (with `weight 0`, keepalived holds the router's instance in FAULT until
    /// then, as `[keepalived] track_file` does for a daemon of one table).
    pub track_file: Option<String>,
    /// Each namespace's staleness, `{id}` standing for its id: `1` while no primary peer
    /// of the namespace was heard from for `stale_after_secs`, `0` otherwise (for a
    /// second `track_file` with a negative `weight`, as `[keepalived] stale_file`).
    pub stale_file: Option<String>,
    /// Seconds without a word from a namespace's primary peer after which its copy is
    /// stale (1 to 86,400; with `stale_file`).
    pub stale_after_secs: Option<u64>,
}

impl Namespaces {
    /// The id of the namespace called `name`, if it is one of ours.
    pub fn id_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let (before, after) = self.pattern.split_once('*')?;
        let id = name.strip_prefix(before)?.strip_suffix(after)?;
        (!id.is_empty() && ctsync_wire::tag::valid_id(id.as_bytes())).then_some(id)
    }

    /// The state file of the namespace with id `id` (roles from state files).
    pub fn state_file(&self, id: &str) -> Option<PathBuf> {
        let f = self.state_file.as_ref()?;
        (self.role == RoleSource::KeepalivedState).then(|| PathBuf::from(f.replace("{id}", id)))
    }

    /// The notify FIFO of the namespace with id `id` (roles from keepalived's FIFOs).
    pub fn notify_fifo(&self, id: &str) -> Option<PathBuf> {
        let f = self.notify_fifo.as_ref()?;
        (self.role == RoleSource::KeepalivedFifo).then(|| PathBuf::from(f.replace("{id}", id)))
    }

    /// The track file of the namespace with id `id`, if any.
    pub fn track_file(&self, id: &str) -> Option<PathBuf> {
        Some(PathBuf::from(self.track_file.as_ref()?.replace("{id}", id)))
    }

    /// The stale file of the namespace with id `id`, with its `stale_after_secs`.
    pub fn stale_file(&self, id: &str) -> Option<(PathBuf, Duration)> {
        Some((
            PathBuf::from(self.stale_file.as_ref()?.replace("{id}", id)),
            Duration::from_secs(self.stale_after_secs?),
        ))
    }

    /// Check the section; `at` gives `file:line` of a key.
    pub(super) fn check(&self, at: impl Fn(&str) -> String) -> Result<()> {
        let stars = self.pattern.matches('*').count();
        if stars != 1 || self.pattern.contains('/') || self.pattern.len() > 200 {
            bail!(
                "{}: [namespaces] match = {:?}: expected a namespace name with exactly one `*` (for example \"qrouter-*\"), no `/`",
                at("match"),
                self.pattern
            );
        }
        let (key, value, other, example) = match self.role {
            RoleSource::KeepalivedState => (
                "state_file",
                &self.state_file,
                ("notify_fifo", &self.notify_fifo),
                "/var/lib/neutron/ha_confs/{id}/state",
            ),
            RoleSource::KeepalivedFifo => (
                "notify_fifo",
                &self.notify_fifo,
                ("state_file", &self.state_file),
                "/run/ctsync/fifo/{id}",
            ),
        };
        let Some(value) = value else {
            bail!(
                "{}: [namespaces] role = {:?} needs {key} (for example {key} = {example:?})",
                at("role"),
                self.role.name()
            );
        };
        if !value.contains("{id}") || !Path::new(value).is_absolute() {
            bail!(
                "{}: [namespaces] {key} = {value:?}: expected an absolute path with {{id}} where the namespace's id goes (for example {example:?})",
                at(key),
            );
        }
        if other.1.is_some() {
            bail!(
                "{}: [namespaces] {} is not used with role = {:?} (roles come from {key}): remove it",
                at(other.0),
                other.0,
                self.role.name()
            );
        }
        for (key, value) in [
            ("track_file", &self.track_file),
            ("stale_file", &self.stale_file),
        ] {
            if let Some(v) = value
                && (!v.contains("{id}") || !Path::new(v).is_absolute())
            {
                bail!(
                    "{}: [namespaces] {key} = {v:?}: expected an absolute path with {{id}} where the namespace's id goes (for example \"/run/ctsync/{key}/{{id}}\"): each router has its own",
                    at(key),
                );
            }
        }
        match (self.stale_file.is_some(), self.stale_after_secs) {
            (true, None) | (false, Some(_)) => bail!(
                "{}: [namespaces] stale_file and stale_after_secs go together: set both or neither",
                at(if self.stale_file.is_some() {
                    "stale_file"
                } else {
                    "stale_after_secs"
                })
            ),
            (_, Some(n)) if !(1..=86_400).contains(&n) => bail!(
                "{}: [namespaces] stale_after_secs = {n}: from 1 to 86400 seconds",
                at("stale_after_secs")
            ),
            _ => {}
        }
        Ok(())
    }
}

impl RoleSource {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            RoleSource::KeepalivedState => "keepalived-state",
            RoleSource::KeepalivedFifo => "keepalived-fifo",
        }
    }
}

/// The role an `INSTANCE` line of a router's keepalived `notify_fifo` gives it (`MASTER`,
/// `BACKUP`, `FAULT` or `STOP`); `None` for other lines.
pub fn instance_role(line: &str) -> Option<Role> {
    crate::keepalived::parse_line(line)
        .filter(|t| t.subject == crate::keepalived::Subject::Instance)?
        .role
}

/// A state file's role: `primary`/`master`, `backup` or `fault` (any case, surrounding
/// white space ignored); `None` for anything else.
pub fn parse_state(text: &str) -> Option<Role> {
    match text.trim().to_ascii_lowercase().as_str() {
        "primary" | "master" => Some(Role::Primary),
        "backup" => Some(Role::Backup),
        "fault" => Some(Role::Fault),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(pattern: &str) -> Namespaces {
        Namespaces {
            pattern: pattern.to_string(),
            role: RoleSource::KeepalivedState,
            state_file: Some("/var/lib/neutron/ha_confs/{id}/state".to_string()),
            notify_fifo: None,
            track_file: None,
            stale_file: None,
            stale_after_secs: None,
        }
    }

    #[test]
    fn ids_are_what_the_star_matched() {
        let n = ns("qrouter-*");
        assert_eq!(n.id_of("qrouter-4f1c"), Some("4f1c"));
        assert_eq!(n.id_of("qrouter-"), None);
        assert_eq!(n.id_of("qdhcp-4f1c"), None);
        assert_eq!(n.id_of(&format!("qrouter-{}", "a".repeat(65))), None);
        let n = ns("a-*-r");
        assert_eq!(n.id_of("a-7-r"), Some("7"));
        assert_eq!(n.id_of("a-7-x"), None);
        assert_eq!(
            n.state_file("7"),
            Some(PathBuf::from("/var/lib/neutron/ha_confs/7/state"))
        );
        assert_eq!(n.notify_fifo("7"), None);
    }

    #[test]
    fn bad_sections_are_refused() {
        let at = |k: &str| format!("f:{k}");
        assert!(ns("qrouter-*").check(at).is_ok());
        for p in ["qrouter", "q-*-*", "a/*"] {
            let e = ns(p).check(at).unwrap_err().to_string();
            assert!(e.contains("exactly one `*`"), "{e}");
        }
        let mut n = ns("q-*");
        n.state_file = Some("/var/lib/state".into());
        assert!(n.check(at).unwrap_err().to_string().contains("{id}"));
        n.state_file = Some("rel/{id}".into());
        assert!(n.check(at).is_err());
        // FIFOs: notify_fifo, not state_file.
        n.role = RoleSource::KeepalivedFifo;
        let e = n.check(at).unwrap_err().to_string();
        assert!(
            e.contains("f:role") && e.contains("needs notify_fifo"),
            "{e}"
        );
        n.notify_fifo = Some("/run/ctsync/fifo/{id}".into());
        let e = n.check(at).unwrap_err().to_string();
        assert!(e.contains("f:state_file") && e.contains("remove it"), "{e}");
        n.state_file = None;
        assert!(n.check(at).is_ok());
        assert_eq!(
            n.notify_fifo("7"),
            Some(PathBuf::from("/run/ctsync/fifo/7"))
        );
        assert_eq!(n.state_file("7"), None);
        n.notify_fifo = Some("/run/ctsync/fifo".into());
        assert!(n.check(at).unwrap_err().to_string().contains("{id}"));
    }

    #[test]
    fn track_and_stale_files_are_each_routers_own() {
        let at = |k: &str| format!("f:{k}");
        let mut n = ns("q-*");
        n.track_file = Some("/run/ctsync/track/{id}".into());
        assert!(n.check(at).is_ok());
        assert_eq!(
            n.track_file("7"),
            Some(PathBuf::from("/run/ctsync/track/7"))
        );
        n.track_file = Some("/run/ctsync/track".into());
        let e = n.check(at).unwrap_err().to_string();
        assert!(e.contains("f:track_file") && e.contains("{id}"), "{e}");
        n.track_file = None;
        n.stale_file = Some("/run/ctsync/stale/{id}".into());
        let e = n.check(at).unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        n.stale_after_secs = Some(0);
        let e = n.check(at).unwrap_err().to_string();
        assert!(
            e.contains("f:stale_after_secs") && e.contains("1 to 86400"),
            "{e}"
        );
        n.stale_after_secs = Some(20);
        assert!(n.check(at).is_ok());
        assert_eq!(
            n.stale_file("7"),
            Some((
                PathBuf::from("/run/ctsync/stale/7"),
                Duration::from_secs(20)
            ))
        );
        n.stale_file = None;
        let e = n.check(at).unwrap_err().to_string();
        assert!(
            e.contains("f:stale_after_secs") && e.contains("go together"),
            "{e}"
        );
    }

    #[test]
    fn a_routers_fifo_sets_its_role_by_instance_lines() {
        assert_eq!(
            instance_role("INSTANCE \"VR_7\" MASTER 100\n"),
            Some(Role::Primary)
        );
        assert_eq!(
            instance_role("INSTANCE \"VR_1\" BACKUP 50"),
            Some(Role::Backup)
        );
        assert_eq!(
            instance_role("INSTANCE \"VR_1\" FAULT 0"),
            Some(Role::Fault)
        );
        assert_eq!(instance_role("GROUP \"G\" MASTER 0"), None);
        assert_eq!(
            instance_role("INSTANCE \"VR_1\" MASTER_RX_LOWER_PRI 0"),
            None
        );
        assert_eq!(instance_role("garbage"), None);
    }

    #[test]
    fn state_files_say_neutrons_words() {
        assert_eq!(parse_state("primary\n"), Some(Role::Primary));
        assert_eq!(parse_state(" MASTER "), Some(Role::Primary));
        assert_eq!(parse_state("backup"), Some(Role::Backup));
        assert_eq!(parse_state("fault"), Some(Role::Fault));
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("unknown"), None);
    }
}
