//! Private files (the master key, client credentials): read only when no one else can, write
//! atomically with mode 0600.
//!
//! A secret file that group or others can read has already leaked as far as we can tell,
//! so it is refused with the command that fixes it, rather than used with a warning.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a private file could not be read or written. Messages name the file and the fix;
/// none ever holds the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{what} file {} does not exist{}", path.display(), hint(what))]
    Missing { what: &'static str, path: PathBuf },
    #[error("{what} file {} is readable by group or others (mode {mode:04o}); run: chmod 600 {}", path.display(), path.display())]
    Exposed {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("{what} file {} is not a regular file", path.display())]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("{what} file {} already exists; pass --force to replace it", path.display())]
    Exists { what: &'static str, path: PathBuf },
    #[error("cannot write the {what} file {}: the directory {} does not exist; create it with: install -d -m 0700 {}", path.display(), dir.display(), dir.display())]
    NoDirectory {
        what: &'static str,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error("{what} file {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} file {} {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

fn hint(what: &str) -> &'static str {
    match what {
        "root key" => "; create one with: cmdchan-server admin init --root PATH",
        "zone key" => "; make one on the admin machine with: cmdchan-server admin zone-key --root ROOT --zone ZONE --out PATH",
        "credential" => "; create one with: cmdchan-server admin provision",
        _ => "",
    }
}

/// Reads a private text file; `what` names it in errors ("master key", "credential").
pub fn read_private(what: &'static str, path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => KeyFileError::Missing {
            what,
            path: path.into(),
        },
        _ => KeyFileError::Io {
            what,
            path: path.into(),
            source,
        },
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            what,
            path: path.into(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            what,
            path: path.into(),
            mode,
        });
    }
    let text = fs::read(path).map_err(io_err)?;
    let text = Zeroizing::new(text);
    match std::str::from_utf8(&text) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(_) => Err(KeyFileError::Invalid {
            what,
            path: path.into(),
            reason: "is not UTF-8 text".into(),
        }),
    }
}

/// Writes `contents` to `path` with mode 0600, all or nothing: a crash or a full disk leaves
/// either the old file or the new one, never a torn one. Without `replace` an existing
/// file is kept and the call fails.
pub fn write_private(
    what: &'static str,
    path: &Path,
    contents: &[u8],
    replace: bool,
) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        what,
        path: path.into(),
        source,
    };
    if !replace && path.exists() {
        return Err(KeyFileError::Exists {
            what,
            path: path.into(),
        });
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(KeyFileError::NoDirectory {
            what,
            path: path.into(),
            dir: dir.into(),
        });
    }
    let tmp = temp_path(path);
    let written = write_new(&tmp, contents).and_then(|()| match replace {
        true => fs::rename(&tmp, path),
        // A hard link fails if `path` appeared meanwhile: no race can overwrite it.
        false => fs::hard_link(&tmp, path),
    });
    let _ = fs::remove_file(&tmp);
    match written {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyFileError::Exists {
            what,
            path: path.into(),
        }),
        other => other.map_err(io_err),
    }
}

fn write_new(tmp: &Path, contents: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        write_private("master key", &path, b"abc", false).expect("write");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        assert_eq!(
            read_private("master key", &path).expect("read").as_str(),
            "abc"
        );
    }

    #[test]
    fn refuses_to_overwrite_without_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        write_private("master key", &path, b"old", false).expect("write");
        let err = write_private("master key", &path, b"new", false).expect_err("exists");
        assert!(matches!(err, KeyFileError::Exists { .. }));
        write_private("master key", &path, b"new", true).expect("replace");
        assert_eq!(
            read_private("master key", &path).expect("read").as_str(),
            "new"
        );
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn refuses_group_readable_files_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        write_private("credential", &path, b"x", false).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_private("credential", &path)
            .expect_err("exposed")
            .to_string();
        assert!(
            err.contains("mode 0640") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn writing_into_a_missing_directory_says_how_to_make_it() {
        let err = write_private("master key", Path::new("/nonexistent-dir/k"), b"x", false)
            .expect_err("no directory")
            .to_string();
        assert!(err.contains("the directory /nonexistent-dir does not exist; create it with: install -d -m 0700 /nonexistent-dir"), "{err}");
    }

    #[test]
    fn a_missing_file_says_how_to_make_one() {
        let err = read_private("root key", Path::new("/nonexistent/k")).expect_err("missing");
        assert!(err.to_string().contains("admin init --root"), "{err}");
    }
}
