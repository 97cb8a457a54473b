//! Completions that ask the binary as the user types: after `--on`, the inventory's
//! names, groups (`@web`), labels (`tier=web`) and zones (`zone=db`), term by term; after
//! `--server`, its names. The inventory is the one `$CMDCHAN_INVENTORY` names, else the
//! default file: the command line being typed is not parsed for `--inventory`.

use std::ffi::OsStr;
use std::io;

use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};

use cmdchan::inventory::{Inventory, Source};

/// Candidates for the last term of a selector being typed.
pub fn on(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else {
        return Vec::new();
    };
    let (typed, last) = match current.rsplit_once(',') {
        Some((before, last)) => (format!("{before},"), last),
        None => (String::new(), current),
    };
    let Some(inventory) = inventory() else {
        return Vec::new();
    };
    let names = inventory.hosts().map(|h| h.name.to_string());
    let groups = inventory.group_names().map(|g| format!("@{g}"));
    names
        .chain(groups)
        .chain(inventory.labels())
        .filter(|word| word.starts_with(last))
        .map(|word| CompletionCandidate::new(format!("{typed}{word}")))
        .collect()
}

/// Candidates for `--server`: the inventory's names.
pub fn server(current: &OsStr) -> Vec<CompletionCandidate> {
    let (Some(current), Some(inventory)) = (current.to_str(), inventory()) else {
        return Vec::new();
    };
    inventory
        .hosts()
        .map(|h| h.name.to_string())
        .filter(|name| name.starts_with(current))
        .map(CompletionCandidate::new)
        .collect()
}

/// Whether the shell asks to complete a word after the remote command (`cmdchan uptime
/// --re<TAB>`): those words are the command's, so the client offers none of its own.
/// `words` are the command line as the shell passes it (after `--`), `index` the word
/// being completed.
pub fn in_remote_command(cmd: &clap::Command, words: &[String], index: usize) -> bool {
    let takes_value = |word: &str| {
        cmd.get_arguments().any(|a| {
            let named = word.strip_prefix("--").map_or_else(
                || {
                    word.strip_prefix('-')
                        .and_then(|s| s.chars().next())
                        .is_some_and(|c| a.get_short() == Some(c) && word.len() == 2)
                },
                |long| a.get_long() == Some(long),
            );
            named && a.get_action().takes_values()
        })
    };
    let mut at = 1;
    while at < index.min(words.len()) {
        let word = &words[at];
        if word == "--" || !word.starts_with('-') {
            let own = cmd.get_subcommands().any(|s| s.get_name() == word.as_str());
            return !own && word != "--";
        }
        at += if !word.contains('=') && takes_value(word) {
            2
        } else {
            1
        };
    }
    false
}

/// The inventory completions read, if there is one that loads.
fn inventory() -> Option<Inventory> {
    let source = match std::env::var("CMDCHAN_INVENTORY") {
        Ok(text) => text.parse::<Source>().ok()?,
        Err(_) => Source::File(cmdchan::inventory::default_path().ok()?),
    };
    source.load().ok()
}

/// The scripts that make each shell ask `cmdchan` for completions (`COMPLETE=SHELL
/// cmdchan -- WORDS…`), for `dir/completions`.
pub fn write_registrations(dir: &std::path::Path) -> io::Result<()> {
    let shells: [(&dyn EnvCompleter, &str); 3] = [
        (&Bash, "cmdchan.bash"),
        (&Zsh, "_cmdchan"),
        (&Fish, "cmdchan.fish"),
    ];
    for (shell, file) in shells {
        let mut script = Vec::new();
        shell.write_registration("COMPLETE", "cmdchan", "cmdchan", "cmdchan", &mut script)?;
        std::fs::write(dir.join("completions").join(file), script)?;
    }
    Ok(())
}
