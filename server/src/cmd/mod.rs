//! The built-in commands: their names, argument rules and dispatch.

mod commands;
mod echo;
mod ping;
mod whoami;

use cmdchan_common::protocol::Reply;

use crate::admit::Admitted;
use crate::policy::Policy;

/// Every command the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    Ping,
    Whoami,
    Echo,
    Commands,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::Ping,
        Builtin::Whoami,
        Builtin::Echo,
        Builtin::Commands,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Ping => "ping",
            Builtin::Whoami => "whoami",
            Builtin::Echo => "echo",
            Builtin::Commands => "commands",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Builtin::Ping => "answer pong: checks the channel end to end",
            Builtin::Whoami => {
                "show the name, role, epoch, expiry and servers the server authenticated"
            }
            Builtin::Echo => "return the arguments unchanged",
            Builtin::Commands => "list the commands this role may run",
        }
    }

    /// Checks the arguments before anything runs; `Err` says what is wrong.
    pub fn check_args(self, args: &[String]) -> Result<(), String> {
        match self {
            Builtin::Echo => Ok(()),
            _ if args.is_empty() => Ok(()),
            other => Err(format!(
                "{} takes no arguments, got {}",
                other.name(),
                args.len()
            )),
        }
    }
}

/// Runs an admitted command; only [`Admitted`] can reach a handler.
pub fn run(cmd: &Admitted<'_>, policy: &Policy) -> Reply {
    match cmd.command() {
        Builtin::Ping => ping::run(),
        Builtin::Whoami => whoami::run(cmd),
        Builtin::Echo => echo::run(cmd),
        Builtin::Commands => commands::run(cmd, policy),
    }
}
