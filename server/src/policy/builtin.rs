//! The catalogue of built-in commands: their names, descriptions and argument rules,
//! beside the policy that grants them (their handlers are in `cmd`).

use cmdchan_common::protocol::{CommandInfo, Param};

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

/// Who may run a built-in without a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Every role: it has no effect and shows nothing beyond the caller's own grant.
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
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, listed);
    }
}
