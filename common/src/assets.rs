//! Shell completions and man pages, generated from a binary's clap definitions, so they
//! can never drift from what the binary accepts.

use std::io;
use std::path::Path;

use clap_complete::Shell;

/// Writes bash, zsh and fish completions to `dir/completions` and man pages (one per
/// subcommand too) to `dir/man` for the command `cmd`.
pub fn generate(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    generate_with(cmd, dir, &[])
}

/// [`generate`], the command's own page with `sections` (title, roff text) after its
/// options and subcommands: EXAMPLES, ENVIRONMENT, FILES, SEE ALSO.
pub fn generate_with(cmd: clap::Command, dir: &Path, sections: &[(&str, &str)]) -> io::Result<()> {
    generate_pages(cmd.clone(), dir)?;
    if sections.is_empty() {
        return Ok(());
    }
    let mut cmd = without_help_subcommands(cmd);
    cmd.build();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    for (title, text) in sections {
        page.extend_from_slice(format!(".SH {title}\n{}\n", text.trim_end()).as_bytes());
    }
    man.render_version_section(&mut page)?;
    std::fs::write(dir.join("man").join(man.get_filename()), page)
}

fn generate_pages(cmd: clap::Command, dir: &Path) -> io::Result<()> {
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
