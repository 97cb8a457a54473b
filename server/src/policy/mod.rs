//! The policy: the commands this server offers and which role may run which.
//!
//! ```toml
//! [default]                          # what every role may run (optional)
//! commands = ["ping", "whoami"]
//!
//! [roles.web-operator]               # what one role may run besides
//! commands = ["restart-service", "commands", "describe"]
//! [roles.web-operator.restrict.restart-service]
//! service = ["nginx", "php-fpm"]     # and the only values it may pass
//!
//! [commands.restart-service]         # a program (see `program`)
//! program = "/usr/bin/systemctl"
//! args = ["restart", "{service}"]
//! [[commands.restart-service.params]]
//! name = "service"
//! type = "string"
//! regex = "[a-z0-9@._-]+"
//! required = true
//! ```
//! Without a policy file the built-in default applies: every role may run the
//! side-effect-free built-ins and nothing else.

mod builtin;
mod param;
mod program;

pub use builtin::Builtin;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use cmdchan_common::ident::Ident;
use cmdchan_common::protocol::CommandInfo;

pub use program::{BindError, Invocation, Program, MAX_APPROVERS};

/// A command by name: a built-in or a program from the policy.
#[derive(Debug, Clone, Copy)]
pub enum Command<'p> {
    Builtin(Builtin),
    Program(&'p Program),
}

/// Parameter values a role is limited to, per parameter name.
pub type Restrictions = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    default: BTreeSet<String>,
    roles: BTreeMap<Ident, Role>,
    programs: BTreeMap<String, Program>,
}

#[derive(Debug, Clone, Default)]
struct Role {
    commands: BTreeSet<String>,
    restrict: BTreeMap<String, Restrictions>,
    /// Its `job.*` commands see every client's jobs, not only its own.
    all_jobs: bool,
    /// It may run commands that need approvals without them (audited loudly).
    emergency: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Option<RoleToml>,
    #[serde(default)]
    roles: BTreeMap<Ident, RoleToml>,
    #[serde(default)]
    commands: BTreeMap<Ident, program::ProgramToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleToml {
    commands: Vec<String>,
    #[serde(default)]
    restrict: BTreeMap<String, Restrictions>,
    /// Whose jobs `job.*` shows: `own` (the default) or `all`.
    #[serde(default)]
    jobs: Jobs,
    /// Runs commands that need approvals without them, each run audited as an
    /// emergency: for the on-call role, not for daily use.
    #[serde(default)]
    emergency: bool,
}

/// Which values of a request are secret (see [`Policy::secrets`]).
#[derive(Debug, Clone, Copy)]
pub enum Secrets<'p> {
    None,
    All,
    Of(&'p [param::ParamSpec]),
}

impl Secrets<'_> {
    /// Whether the positional value at `index` is secret.
    pub fn at(&self, index: usize) -> bool {
        match self {
            Secrets::None => false,
            Secrets::All => true,
            Secrets::Of(params) => params.get(index).is_some_and(|p| p.secret),
        }
    }

    /// Whether the named value `name` is secret.
    pub fn named(&self, name: &str) -> bool {
        match self {
            Secrets::None => false,
            Secrets::All => true,
            Secrets::Of(params) => params
                .iter()
                .find(|p| p.name == name)
                .is_none_or(|p| p.secret),
        }
    }
}

/// Whose jobs a role reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Jobs {
    #[default]
    Own,
    All,
}

impl Policy {
    /// The policy when no file is given: every role may run the built-ins the catalogue
    /// grants to everyone.
    pub fn builtin_default() -> Self {
        let default = Builtin::ALL
            .iter()
            .filter(|b| b.grant() == builtin::Grant::Everyone)
            .map(|b| b.name().to_owned())
            .collect();
        Self {
            default,
            ..Self::default()
        }
    }

    /// Reads a policy file. Anything it names that does not exist (a command, a
    /// parameter, a program) is an error, so a typo cannot silently grant or withhold.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("policy file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("policy file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: PolicyFile = toml::from_str(text)?;
        let mut programs = BTreeMap::new();
        for (name, p) in file.commands {
            if Builtin::parse(name.as_str()).is_some() {
                bail!("command {name} has the name of a built-in");
            }
            let program = Program::from_toml(name.as_str(), p)
                .map_err(|e| anyhow::anyhow!("command {name}: {e}"))?;
            programs.insert(name.to_string(), program);
        }
        let mut policy = Self {
            programs,
            ..Self::default()
        };
        if let Some(d) = file.default {
            if !d.restrict.is_empty() {
                bail!("[default] cannot restrict parameters; restrict them per role");
            }
            if d.emergency {
                bail!("[default] cannot be an emergency role; name the role that is");
            }
            policy.default = policy.role(d).context("[default]")?.commands;
        }
        for (name, r) in file.roles {
            let role = policy.role(r).with_context(|| format!("role {name}"))?;
            policy.roles.insert(name, role);
        }
        Ok(policy)
    }

    fn role(&self, r: RoleToml) -> anyhow::Result<Role> {
        for name in &r.commands {
            if self.lookup(name).is_none() {
                bail!("unknown command {name:?}");
            }
        }
        if let Some(cmd) = r.restrict.keys().find(|cmd| !r.commands.contains(*cmd)) {
            bail!("restrict: {cmd} is not in this role's commands");
        }
        // Each allowed value is kept as the program would get it (an integer in canonical
        // form), so it compares with the checked value of a request.
        let mut restrict = BTreeMap::new();
        for (cmd, limits) in r.restrict {
            let Some(Command::Program(p)) = self.lookup(&cmd) else {
                bail!("restrict: {cmd:?} is not a declared program")
            };
            let mut canonical = Restrictions::new();
            for (param, values) in limits {
                let Some(spec) = p.params.iter().find(|s| s.name == param) else {
                    bail!("restrict: {cmd} has no parameter {param}")
                };
                let checked = values
                    .iter()
                    .map(|v| {
                        spec.check(v).map_err(|e| {
                            anyhow::anyhow!("restrict: {cmd}.{param} value {} {e}", spec.shown(v))
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                canonical.insert(param, checked);
            }
            restrict.insert(cmd, canonical);
        }
        Ok(Role {
            commands: r.commands.into_iter().collect(),
            restrict,
            all_jobs: r.jobs == Jobs::All,
            emergency: r.emergency,
        })
    }

    /// The command called `name`, whoever may run it.
    pub fn lookup(&self, name: &str) -> Option<Command<'_>> {
        match Builtin::parse(name) {
            Some(b) => Some(Command::Builtin(b)),
            None => self.programs.get(name).map(Command::Program),
        }
    }

    pub fn allows(&self, role: &Ident, name: &str) -> bool {
        let always = Builtin::parse(name).is_some_and(|b| b.grant() == builtin::Grant::Always);
        always
            || self.default.contains(name)
            || self
                .roles
                .get(role)
                .is_some_and(|r| r.commands.contains(name))
    }

    /// Which of a command's values are secret, by position and by name: a program's
    /// declared secret parameters; none of a built-in's; every value of a command the
    /// policy does not know (it cannot say which would have been).
    pub fn secrets(&self, command: &str) -> Secrets<'_> {
        match (self.programs.get(command), Builtin::parse(command)) {
            (Some(program), _) => Secrets::Of(&program.params),
            (None, Some(_)) => Secrets::None,
            (None, None) => Secrets::All,
        }
    }

    /// The commands whose output is recorded in full (`record_output = "full"`).
    pub fn recorded_in_full(&self) -> Vec<&str> {
        let full = self.programs.values().filter(|p| p.record_full);
        full.map(|p| p.name.as_str()).collect()
    }

    /// Whether `role` reads every client's jobs (`jobs = "all"`), not only its own.
    pub fn reads_all_jobs(&self, role: &Ident) -> bool {
        self.roles.get(role).is_some_and(|r| r.all_jobs)
    }

    /// Whether any command needs approvals.
    pub fn asks_for_approvals(&self) -> bool {
        self.programs.values().any(|p| p.approvals > 0)
    }

    /// Whether `role` may run a command that needs approvals without them.
    pub fn is_emergency(&self, role: &Ident) -> bool {
        self.roles.get(role).is_some_and(|r| r.emergency)
    }

    /// The values `role` is limited to for `command`'s parameters, if any.
    pub fn restrictions(&self, role: &Ident, command: &str) -> Option<&Restrictions> {
        self.roles.get(role)?.restrict.get(command)
    }

    /// What `role` may run, built-ins first, each with its parameters.
    pub fn commands_for(&self, role: &Ident) -> Vec<CommandInfo> {
        let builtins = Builtin::ALL.iter().map(|b| b.name());
        let names = builtins.chain(self.programs.keys().map(String::as_str));
        names
            .filter(|n| self.allows(role, n))
            .filter_map(|n| self.describe(role, n))
            .collect()
    }

    /// One command as `role` sees it; `None` if it does not exist or the role may not run it.
    pub fn describe(&self, role: &Ident, name: &str) -> Option<CommandInfo> {
        if !self.allows(role, name) {
            return None;
        }
        match self.lookup(name)? {
            Command::Builtin(b) => Some(b.info()),
            Command::Program(p) => Some(p.info(self.restrictions(role, name))),
        }
    }
}

#[cfg(test)]
mod tests;
