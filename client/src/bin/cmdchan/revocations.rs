//! `cmdchan revocations …`: the signed revocation lists the admin machine makes
//! (`cmdchan-server admin revoke`), carried to servers. The client keeps the newest list
//! it has pushed (`~/.cache/cmdchan/revocations.list`) and gives it to any server whose
//! handshake names an older one, so a server that was down during a push learns it from
//! the next client that reaches it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use cmdchan::KnownList;

#[derive(Debug, Clone, Subcommand)]
pub enum RevocationsCmd {
    /// Give the server (with --on, every server picked) the signed list in FILE; it
    /// takes it if it is newer than its own and signed by the root's revocation key.
    Push { file: PathBuf },
    /// Show the version of the list the server keeps.
    Status,
}

impl RevocationsCmd {
    /// The built-in that does it and its arguments; a pushed list becomes the one this
    /// client keeps, if it is newer.
    pub fn remote(&self) -> Result<(String, Vec<String>), String> {
        match self {
            RevocationsCmd::Status => Ok(("revocations.status".into(), Vec::new())),
            RevocationsCmd::Push { file } => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let list =
                    KnownList::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                keep(&list);
                Ok(("revocations.push".into(), vec![list.text]))
            }
        }
    }
}

/// Where the client keeps the newest list it knows.
fn cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cmdchan/revocations.list"))
}

/// The newest list this client knows, if any.
pub fn known() -> Option<Arc<KnownList>> {
    let text = std::fs::read_to_string(cache()?).ok()?;
    KnownList::parse(&text).ok().map(Arc::new)
}

/// Keeps `list` if it is newer than the one kept; a cache that cannot be written is
/// only a cache.
fn keep(list: &KnownList) {
    if known().is_some_and(|k| k.version >= list.version) {
        return;
    }
    let Some(path) = cache() else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension("new");
    if std::fs::write(&tmp, format!("{}\n", list.text)).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}
