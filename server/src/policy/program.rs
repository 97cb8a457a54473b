//! A program the policy declares: its path, its argv template with `{param}` placeholders,
//! its typed parameters, and how it runs (timeout, output limit, environment, user).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use serde::Deserialize;

use cmdchan_common::ident::Ident;
use cmdchan_common::protocol::{CommandInfo, Param};

use super::param::{ParamSpec, ParamToml};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_OUTPUT_LIMIT: u64 = 1 << 20;
const DEFAULT_STDIN_LIMIT: u64 = 1 << 20;
/// The most approvers a request may carry (and a command may ask for).
pub const MAX_APPROVERS: usize = 32;

/// `[commands.NAME]` as the policy file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramToml {
    #[serde(default)]
    description: String,
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    params: Vec<ParamToml>,
    timeout: Option<String>,
    output_limit: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    detach: bool,
    #[serde(default)]
    record_output: RecordOutput,
    max_concurrent: Option<usize>,
    #[serde(default)]
    stdin: bool,
    stdin_limit: Option<u64>,
    /// Distinct approvers a request needs before it runs (PROTOCOL.md §5.8).
    #[serde(default)]
    approvals: usize,
    /// The roles whose members may approve it.
    #[serde(default)]
    approvers: Vec<Ident>,
}

/// What the audit trail keeps of a program's output: always the SHA-256 of each
/// stream; with `full`, all of it too, in the spool beside the audit file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RecordOutput {
    #[default]
    Digest,
    Full,
}

/// A checked program definition.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    template: Vec<Piece>,
    pub params: Vec<ParamSpec>,
    pub timeout: Duration,
    pub output_limit: u64,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// uid and gid to run as (the server must be root).
    pub run_as: Option<(u32, u32)>,
    /// Let the program finish if its client disconnects.
    pub detach: bool,
    /// Keep all it prints in the audit spool, not only its digests.
    pub record_full: bool,
    /// This command's own limit on runs at once, if the policy sets one.
    pub slots: Option<Arc<Semaphore>>,
    /// The client's stdin goes to the program, up to this many bytes; `None`: the
    /// program's stdin is empty (/dev/null) and the client does not read its own.
    pub stdin: Option<u64>,
    /// How many distinct approvers must co-sign a request, of which roles.
    pub approvals: usize,
    pub approvers: Vec<Ident>,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    /// Index into `params`.
    Param(usize),
}

/// A bound call: the exact argv, and each parameter's value for the audit log.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub values: Vec<(String, String, bool)>,
}

/// Why arguments do not bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// The arguments are wrong whoever sends them.
    Bad(String),
    /// The arguments are valid, but not for this role.
    Forbidden(String),
}

impl Program {
    /// Checks a definition; errors name what is wrong.
    pub fn from_toml(name: &str, p: ProgramToml) -> Result<Self, String> {
        if !p.program.is_absolute() {
            return Err(format!(
                "program {} is not an absolute path",
                p.program.display()
            ));
        }
        if !p.program.is_file() {
            return Err(format!("program {} does not exist", p.program.display()));
        }
        let params = p
            .params
            .into_iter()
            .map(ParamSpec::from_toml)
            .collect::<Result<Vec<_>, _>>()?;
        let template = template(&p.args, &params)?;
        let timeout = match &p.timeout {
            Some(t) => humantime::parse_duration(t).map_err(|e| format!("timeout {t:?}: {e}"))?,
            None => DEFAULT_TIMEOUT,
        };
        if p.approvals > 0 && p.approvers.is_empty() {
            return Err(format!(
                "approvals = {} needs approvers = [roles that may approve it]",
                p.approvals
            ));
        }
        if p.approvals == 0 && !p.approvers.is_empty() {
            return Err("approvers needs approvals = N (how many must approve)".into());
        }
        // An approval covers the request, not what the requester pipes in later.
        if p.approvals > 0 && p.stdin {
            return Err("approvals and stdin = true cannot go together: an approval covers the command and its arguments, not the stdin sent when it runs".into());
        }
        if p.approvals > MAX_APPROVERS {
            return Err(format!(
                "approvals = {} is more than {MAX_APPROVERS}",
                p.approvals
            ));
        }
        Ok(Self {
            approvals: p.approvals,
            approvers: p.approvers,
            name: name.to_owned(),
            description: p.description,
            path: p.program,
            template,
            params,
            timeout,
            output_limit: p.output_limit.unwrap_or(DEFAULT_OUTPUT_LIMIT),
            env: p.env,
            cwd: p.cwd.unwrap_or_else(|| "/".into()),
            run_as: run_as(p.user.as_deref(), p.group.as_deref())?,
            detach: p.detach,
            record_full: p.record_output == RecordOutput::Full,
            slots: p.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            stdin: match (p.stdin, p.stdin_limit) {
                (true, limit) => Some(limit.unwrap_or(DEFAULT_STDIN_LIMIT)),
                (false, None) => None,
                (false, Some(_)) => return Err("stdin_limit needs stdin = true".into()),
            },
        })
    }

    /// Binds positional values (in declared order) and named ones to the parameters,
    /// checks each, applies the role's `allowed` values, and builds the argv.
    ///
    /// A restricted parameter is restricted whether it is given or not: the value it
    /// takes (given, else its default, else `false` for a flag) must be one the role is
    /// allowed, and an optional one with no value at all is refused for that role
    /// (leaving a value out must not be a way around its restriction).
    pub fn bind(
        &self,
        positional: &[String],
        named: &[Param],
        allowed: Option<&BTreeMap<String, Vec<String>>>,
    ) -> Result<Invocation, BindError> {
        let given = self.collect(positional, named).map_err(BindError::Bad)?;
        let mut checked: Vec<Option<String>> = Vec::with_capacity(self.params.len());
        for (spec, value) in self.params.iter().zip(given) {
            let limit = allowed.and_then(|a| a.get(&spec.name));
            let value = value
                .or_else(|| spec.default.clone())
                .or_else(|| spec.absent());
            let Some(value) = value else {
                if spec.required {
                    return Err(BindError::Bad(format!(
                        "missing required parameter {}",
                        spec.name
                    )));
                }
                if let Some(values) = limit {
                    return Err(BindError::Forbidden(format!(
                        "this role must give {} (one of: {})",
                        spec.name,
                        spec.shown_list(values)
                    )));
                }
                checked.push(None);
                continue;
            };
            let value = spec
                .check(&value)
                .map_err(|e| BindError::Bad(format!("{}: value {e}", spec.name)))?;
            if limit.is_some_and(|values| !values.contains(&value)) {
                // A secret's value never goes into a refusal (which reaches the log, the
                // audit file and the reply).
                return Err(BindError::Forbidden(format!(
                    "this role may not use {} = {}",
                    spec.name,
                    spec.shown(&value)
                )));
            }
            checked.push(Some(value));
        }
        Ok(self.invocation(&checked))
    }

    fn collect(
        &self,
        positional: &[String],
        named: &[Param],
    ) -> Result<Vec<Option<String>>, String> {
        if positional.len() > self.params.len() {
            return Err(format!(
                "{} takes at most {} arguments, got {}",
                self.name,
                self.params.len(),
                positional.len()
            ));
        }
        let mut given: Vec<Option<String>> = vec![None; self.params.len()];
        for (slot, value) in given.iter_mut().zip(positional) {
            *slot = Some(value.clone());
        }
        for p in named {
            let Some(i) = self.params.iter().position(|s| s.name == p.name) else {
                return Err(format!("{} has no parameter {:?}", self.name, p.name));
            };
            if given[i].replace(p.value.clone()).is_some() {
                return Err(format!("parameter {} is given twice", p.name));
            }
        }
        Ok(given)
    }

    fn invocation(&self, checked: &[Option<String>]) -> Invocation {
        let argv = self
            .template
            .iter()
            .filter_map(|piece| match piece {
                Piece::Literal(s) => Some(s.clone()),
                Piece::Param(i) => checked[*i]
                    .as_deref()
                    .and_then(|v| self.params[*i].argument(v)),
            })
            .collect();
        let values = self
            .params
            .iter()
            .zip(checked)
            .filter_map(|(spec, v)| Some((spec.name.clone(), v.clone()?, spec.secret)))
            .collect();
        Invocation { argv, values }
    }

    /// The command as the wire describes it, for a role with these restrictions.
    pub fn info(&self, allowed: Option<&BTreeMap<String, Vec<String>>>) -> CommandInfo {
        let params = self
            .params
            .iter()
            .map(|p| p.info(allowed.and_then(|a| a.get(&p.name)).map_or(&[][..], |v| v)))
            .collect();
        CommandInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            params,
        }
    }
}

/// Each argument is a literal or exactly `{name}` of a declared parameter.
fn template(args: &[String], params: &[ParamSpec]) -> Result<Vec<Piece>, String> {
    let pieces = args
        .iter()
        .map(|arg| {
            let Some(name) = arg.strip_prefix('{').and_then(|a| a.strip_suffix('}')) else {
                if params
                    .iter()
                    .any(|p| arg.contains(&format!("{{{}}}", p.name)))
                {
                    return Err(format!(
                        "argument {arg:?}: a placeholder must be a whole argument"
                    ));
                }
                return Ok(Piece::Literal(arg.clone()));
            };
            match params.iter().position(|p| p.name == name) {
                Some(i) => Ok(Piece::Param(i)),
                None => Err(format!("argument {arg:?} names no declared parameter")),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (i, p) in params.iter().enumerate() {
        if !pieces
            .iter()
            .any(|piece| matches!(piece, Piece::Param(j) if *j == i))
        {
            return Err(format!("parameter {} is not used in args", p.name));
        }
    }
    Ok(pieces)
}

/// Resolves `user` and `group` (names or numbers); only a root server can use them.
fn run_as(user: Option<&str>, group: Option<&str>) -> Result<Option<(u32, u32)>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("user and group need the server to run as root".into());
    }
    let user = user.ok_or("group needs user too")?;
    let (uid, primary) = match nix::unistd::User::from_name(user).ok().flatten() {
        Some(u) => (u.uid.as_raw(), u.gid.as_raw()),
        None => {
            let uid = user.parse().map_err(|_| format!("no user {user:?}"))?;
            (uid, uid)
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match nix::unistd::Group::from_name(g).ok().flatten() {
            Some(grp) => grp.gid.as_raw(),
            None => g.parse().map_err(|_| format!("no group {g:?}"))?,
        },
    };
    Ok(Some((uid, gid)))
}
