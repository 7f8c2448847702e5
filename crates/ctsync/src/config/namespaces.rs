//! `[namespaces]`: one daemon replicating many network namespaces (a Neutron network
//! node's routers), each matched by name, each with its role from a state file.

use std::path::{Path, PathBuf};

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
    /// Each namespace's state file, `{id}` standing for its id.
    pub state_file: String,
}

impl Namespaces {
    /// The id of the namespace called `name`, if it is one of ours.
    pub fn id_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let (before, after) = self.pattern.split_once('*')?;
        let id = name.strip_prefix(before)?.strip_suffix(after)?;
        (!id.is_empty() && ctsync_wire::tag::valid_id(id.as_bytes())).then_some(id)
    }

    /// The state file of the namespace with id `id`.
    pub fn state_file(&self, id: &str) -> PathBuf {
        PathBuf::from(self.state_file.replace("{id}", id))
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
        if !self.state_file.contains("{id}") || !Path::new(&self.state_file).is_absolute() {
            bail!(
                "{}: [namespaces] state_file = {:?}: expected an absolute path with {{id}} where the namespace's id goes (for example \"/var/lib/neutron/ha_confs/{{id}}/state\")",
                at("state_file"),
                self.state_file
            );
        }
        Ok(())
    }
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
            state_file: "/var/lib/neutron/ha_confs/{id}/state".to_string(),
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
            PathBuf::from("/var/lib/neutron/ha_confs/7/state")
        );
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
        n.state_file = "/var/lib/state".into();
        assert!(n.check(at).unwrap_err().to_string().contains("{id}"));
        n.state_file = "rel/{id}".into();
        assert!(n.check(at).is_err());
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
