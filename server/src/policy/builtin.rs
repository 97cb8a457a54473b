//! The catalogue of built-in commands: their names, descriptions and argument rules,
//! beside the policy that grants them (their handlers are in `cmd`).

use cmdchan_common::protocol::{CommandInfo, Param};

/// Every command the server has without a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    Ping,
    Whoami,
    Echo,
    Commands,
    Describe,
}

impl Builtin {
    pub const ALL: [Builtin; 5] = [
        Builtin::Ping,
        Builtin::Whoami,
        Builtin::Echo,
        Builtin::Commands,
        Builtin::Describe,
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
            Builtin::Describe => "describe",
        }
    }

    pub fn info(self) -> CommandInfo {
        let description = match self {
            Builtin::Ping => "answer pong: checks the channel end to end",
            Builtin::Whoami => {
                "show the name, role, epoch, expiry and servers the server authenticated"
            }
            Builtin::Echo => "return the arguments unchanged",
            Builtin::Commands => "list the commands this role may run",
            Builtin::Describe => {
                "show one command and its parameters (argument: the command's name)"
            }
        };
        CommandInfo {
            name: self.name().to_owned(),
            description: description.to_owned(),
            params: vec![],
        }
    }

    /// Checks the arguments before anything runs; `Err` says what is wrong.
    pub fn check_args(self, args: &[String], params: &[Param]) -> Result<(), String> {
        if !params.is_empty() {
            return Err(format!("{} takes no named parameters", self.name()));
        }
        match (self, args.len()) {
            (Builtin::Echo, _) | (Builtin::Describe, 1) => Ok(()),
            (Builtin::Describe, n) => Err(format!(
                "describe takes one argument, the command's name; got {n}"
            )),
            (_, 0) => Ok(()),
            (other, n) => Err(format!("{} takes no arguments, got {n}", other.name())),
        }
    }
}
