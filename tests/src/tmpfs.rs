//! A small tmpfs for one test: a file system that fills up.

use std::path::PathBuf;
use std::process::Command;

use crate::{run, system, text};

/// A small tmpfs mounted for one test (a file system that fills up); unmounted on drop.
/// Mounting needs root, which CI has: without it the test fails, it never skips.
#[derive(Debug)]
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let out = run(system("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (the full-disk tests need root): {}",
            dir.display(),
            text(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// Fills the file system to the last byte with a file named `filler`.
    pub fn fill(&self) {
        let filler = self.dir.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .unwrap();
        let block = vec![0u8; 4096];
        use std::io::Write;
        while file.write_all(&block).is_ok() {}
        // Whatever room is left is smaller than a block: take it byte by byte.
        while file.write_all(&[0]).is_ok() {}
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg("-l").arg(&self.dir));
    }
}
