//! The policy: which role may run which command.
//!
//! ```toml
//! [default]                 # commands every role may run (optional)
//! commands = ["ping"]
//! [roles.operator]          # and what one role may run besides
//! commands = ["whoami", "echo", "commands"]
//! ```
//! Without a policy file the built-in default applies: every role may run the four
//! side-effect-free built-ins (`ping`, `whoami`, `echo`, `commands`) and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use cmdchan_common::ident::Ident;

use crate::cmd::Builtin;

#[derive(Debug, Clone)]
pub struct Policy {
    default: BTreeSet<Builtin>,
    roles: BTreeMap<Ident, BTreeSet<Builtin>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    default: Option<RoleEntry>,
    #[serde(default)]
    roles: BTreeMap<Ident, RoleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    commands: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default: Builtin::ALL.into_iter().collect(),
            roles: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// Reads a policy file; a command name it does not know is an error, not a no-op,
    /// so a typo cannot silently grant or withhold anything.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("policy file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("policy file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: PolicyFile = toml::from_str(text)?;
        let default = match file.default {
            Some(entry) => commands(&entry)?,
            None => BTreeSet::new(),
        };
        let roles = file
            .roles
            .iter()
            .map(|(role, entry)| Ok((role.clone(), commands(entry)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { default, roles })
    }

    pub fn allows(&self, role: &Ident, cmd: Builtin) -> bool {
        self.default.contains(&cmd) || self.roles.get(role).is_some_and(|set| set.contains(&cmd))
    }

    /// Every command `role` may run, in a stable order.
    pub fn commands_for(&self, role: &Ident) -> Vec<Builtin> {
        Builtin::ALL
            .into_iter()
            .filter(|&b| self.allows(role, b))
            .collect()
    }
}

fn commands(entry: &RoleEntry) -> anyhow::Result<BTreeSet<Builtin>> {
    entry
        .commands
        .iter()
        .map(|name| match Builtin::parse(name) {
            Some(b) => Ok(b),
            None => bail!("unknown command {name:?} (known: ping, whoami, echo, commands)"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(s: &str) -> Ident {
        Ident::new(s).expect("valid")
    }

    #[test]
    fn default_policy_allows_only_the_built_ins_to_every_role() {
        let p = Policy::default();
        assert_eq!(p.commands_for(&role("anyone")), Builtin::ALL.to_vec());
    }

    #[test]
    fn roles_get_the_default_plus_their_own() {
        let p = Policy::parse("[default]\ncommands=[\"ping\"]\n[roles.ops]\ncommands=[\"echo\"]\n")
            .expect("parse");
        assert_eq!(
            p.commands_for(&role("ops")),
            vec![Builtin::Ping, Builtin::Echo]
        );
        assert_eq!(p.commands_for(&role("other")), vec![Builtin::Ping]);
        assert!(!p.allows(&role("other"), Builtin::Echo));
    }

    #[test]
    fn unknown_commands_and_keys_are_errors() {
        assert!(Policy::parse("[roles.ops]\ncommands=[\"rm\"]\n").is_err());
        assert!(Policy::parse("[roles.ops]\ncommand=[\"ping\"]\n").is_err());
    }
}
