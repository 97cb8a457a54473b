//! Shell completions and man pages, generated from a binary's clap definitions, so they
//! can never drift from what the binary accepts.

use std::io;
use std::path::Path;

use clap_complete::Shell;

/// Writes bash, zsh and fish completions to `dir/completions` and man pages (one per
/// subcommand too) to `dir/man` for the command `cmd`.
pub fn generate(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    let mut cmd = without_help_subcommands(cmd);
    let name = cmd.get_name().to_owned();
    let completions = dir.join("completions");
    let man = dir.join("man");
    std::fs::create_dir_all(&completions)?;
    std::fs::create_dir_all(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)?;
    }
    clap_mangen::generate_to(cmd, &man)
}

/// `help` subcommands would get man pages of their own; `--help` is enough.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommands)
}
