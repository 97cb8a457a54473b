//! The catalogue of built-in commands: their names, descriptions and argument rules,
//! beside the policy that grants them (their handlers are in `cmd`).

use cmdchan_common::protocol::{CommandInfo, Param, JOBS_AT_ONCE};

/// Each built-in is one line of the list: its variant, its name, who may run it without a
/// policy file, and its description. The enum, [`Builtin::ALL`], its name, its default
/// grant and its description come from it, so a new one cannot be left out of the
/// catalogue, and its grant is chosen where it is added; the compiler then asks for its
/// handler.
macro_rules! builtins {
    ($( $(#[$meta:meta])* $variant:ident => $name:literal, $grant:ident, $description:literal; )+) => {
        /// Every command the server has without a policy.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Builtin {
            $( $(#[$meta])* $variant, )+
        }

        impl Builtin {
            pub const ALL: &'static [Builtin] = &[$( Builtin::$variant, )+];

            pub fn name(self) -> &'static str {
                match self {
                    $( Builtin::$variant => $name, )+
                }
            }

            fn description(self) -> &'static str {
                match self {
                    $( Builtin::$variant => $description, )+
                }
            }

            /// Who may run it when no policy file says otherwise.
            pub fn grant(self) -> Grant {
                match self {
                    $( Builtin::$variant => Grant::$grant, )+
                }
            }
        }
    };
}

/// Who may run a built-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Every role, whatever a policy file says: it shows the caller only what is its
    /// own (its jobs), so a client that may start a job may always follow it.
    Always,
    /// Every role when there is no policy file: it has no effect and shows nothing
    /// beyond the caller's own grant.
    Everyone,
    /// Only the roles a policy names it for (a built-in with an effect, or that shows
    /// more than the caller's own).
    Named,
}

builtins! {
    Ping => "ping", Everyone, "answer pong: checks the channel end to end";
    Whoami => "whoami", Everyone, "show the name, role, epoch, expiry and servers the server authenticated";
    Echo => "echo", Everyone, "return the arguments unchanged";
    Commands => "commands", Everyone, "list the commands this role may run";
    Describe => "describe", Everyone, "show one command and its parameters (argument: the command's name)";
    JobStatus => "job.status", Always, "show jobs' states (arguments: their IDs)";
    JobList => "job.list", Always, "list this client's jobs, newest first";
    JobWait => "job.wait", Always, "wait for a job to end and show how it did (argument: its ID)";
    JobOutput => "job.output", Always, "send a job's kept output (arguments: its ID, and a byte offset)";
    JobAttach => "job.attach", Always, "follow a job's output as it comes, from a byte offset, until it ends";
    RevocationsStatus => "revocations.status", Always, "show the version of the signed revocation list this server keeps";
    RevocationsPush => "revocations.push", Always, "give this server a newer signed revocation list (argument: the list's text)";
}

impl Builtin {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|b| b.name() == name)
    }

    pub fn info(self) -> CommandInfo {
        CommandInfo {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            params: vec![],
        }
    }

    /// Checks the arguments before anything runs; `Err` says what is wrong.
    pub fn check_args(self, args: &[String], params: &[Param]) -> Result<(), String> {
        if !params.is_empty() {
            return Err(format!("{} takes no named parameters", self.name()));
        }
        match (self, args) {
            (Builtin::Echo, _) | (Builtin::Describe, [_]) => Ok(()),
            (Builtin::Describe, _) => Err(format!(
                "describe takes one argument, the command's name; got {}",
                args.len()
            )),
            (Builtin::JobStatus, ids) if (1..=JOBS_AT_ONCE).contains(&ids.len()) => {
                ids.iter().try_for_each(|id| job_id(id))
            }
            (Builtin::JobStatus, _) => Err(format!(
                "job.status takes 1 to {JOBS_AT_ONCE} job IDs; got {}",
                args.len()
            )),
            (Builtin::JobWait, [id]) => job_id(id),
            (Builtin::JobOutput | Builtin::JobAttach, [id]) => job_id(id),
            (Builtin::JobOutput | Builtin::JobAttach, [id, offset]) => {
                job_id(id)?;
                offset
                    .parse::<u64>()
                    .map(|_| ())
                    .map_err(|_| format!("{offset:?} is not a byte offset"))
            }
            (Builtin::RevocationsPush, [_]) => Ok(()),
            (Builtin::RevocationsPush, _) => Err(format!(
                "revocations.push takes one argument, the list's text; got {}",
                args.len()
            )),
            (Builtin::JobWait | Builtin::JobOutput | Builtin::JobAttach, _) => Err(format!(
                "{} takes a job ID{}",
                self.name(),
                if self == Builtin::JobWait {
                    ""
                } else {
                    " and an optional byte offset"
                }
            )),
            (_, []) => Ok(()),
            (other, _) => Err(format!(
                "{} takes no arguments, got {}",
                other.name(),
                args.len()
            )),
        }
    }

    /// Whether it follows a job over time (its answer waits, or streams output) and is
    /// run by the connection rather than answered at once.
    pub fn follows(self) -> bool {
        matches!(
            self,
            Builtin::JobWait | Builtin::JobOutput | Builtin::JobAttach
        )
    }
}

/// A job ID: 32 hex digits (a command ID).
fn job_id(text: &str) -> Result<(), String> {
    match cmdchan_common::protocol::parse_id(text) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{:?} is not a job ID (32 hex digits)",
            cmdchan_common::ident::printable(text.as_bytes())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients hold a server to the protocol's list of built-ins (no stdin, a reply of
    /// their kind): the catalogue and that list must name the same commands.
    #[test]
    fn the_catalogue_is_the_protocols_list_of_built_ins() {
        let names: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
        let listed: Vec<&str> = cmdchan_common::protocol::BUILTINS
            .iter()
            .map(|(n, _, _)| *n)
            .collect();
        assert_eq!(names, listed);
    }
}
