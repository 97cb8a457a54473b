//! What the client keeps of servers' output, and where it spills: a server may send any
//! amount whatever its policy says, so what is held in memory (for `--gather`, `--json`)
//! is capped per server and stream and in all, and `--out-dir` files are written as the
//! output arrives, capped the same way. What is cut is counted, and said.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cmdchan::Stream;

/// Memory all servers' kept output may take together; past it, output is counted but
/// no longer kept.
pub const TOTAL: usize = 256 << 20;

/// One server's stream: the bytes kept and how many came.
#[derive(Debug, Default, Clone)]
pub struct Kept {
    pub data: Vec<u8>,
    pub received: u64,
}

impl Kept {
    /// Whether some of what came was not kept.
    pub fn cut(&self) -> bool {
        self.received > self.data.len() as u64
    }
}

/// The output kept of every server, per stream, within the caps.
#[derive(Debug)]
pub struct Store {
    kept: Vec<[Kept; 2]>,
    per_stream: u64,
    total: usize,
    on: bool,
}

impl Store {
    /// `on`: keep anything at all (the stream view prints as it goes and keeps nothing).
    pub fn new(servers: usize, per_stream: u64, on: bool) -> Self {
        Self {
            kept: vec![Default::default(); servers],
            per_stream,
            total: 0,
            on,
        }
    }

    pub fn add(&mut self, host: usize, stream: Stream, data: &[u8]) {
        if !self.on {
            return;
        }
        let kept = &mut self.kept[host][index(stream)];
        kept.received += data.len() as u64;
        let room_here = self.per_stream.saturating_sub(kept.data.len() as u64);
        let room = usize::try_from(room_here)
            .unwrap_or(usize::MAX)
            .min(TOTAL.saturating_sub(self.total));
        let take = data.len().min(room);
        kept.data.extend_from_slice(&data[..take]);
        self.total += take;
    }

    /// Text the client itself adds (a built-in's reply), kept whatever the caps.
    pub fn add_reply(&mut self, host: usize, text: &str) {
        let kept = &mut self.kept[host][0];
        kept.data.extend_from_slice(text.as_bytes());
        kept.received += text.len() as u64;
    }

    pub fn get(&self, host: usize, stream: Stream) -> &Kept {
        &self.kept[host][index(stream)]
    }

    /// What was cut of a server's output, in words ("stdout cut at 16 MiB of 400 MiB"),
    /// if anything was.
    pub fn cut_note(&self, host: usize) -> Option<String> {
        let notes: Vec<String> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter(|s| self.get(host, *s).cut())
            .map(|s| {
                let k = self.get(host, s);
                format!(
                    "{} cut: {} of {} bytes kept",
                    name(s),
                    k.data.len(),
                    k.received
                )
            })
            .collect();
        (!notes.is_empty()).then(|| notes.join(", "))
    }
}

/// `--out-dir`: DIR/NAME.stdout and DIR/NAME.stderr, written as output arrives. Files
/// are made new (never opened through a symbolic link, never over a file that is
/// there), so a link planted in the directory cannot turn a server's output into a
/// write anywhere else.
#[derive(Debug)]
pub struct OutDir {
    dir: PathBuf,
    files: Vec<[Option<File>; 2]>,
    written: Vec<[u64; 2]>,
    per_stream: u64,
    names: Vec<String>,
}

impl OutDir {
    /// Makes `dir` if missing and checks that none of the files it will write is there.
    pub fn prepare(dir: &Path, names: &[String], per_stream: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for name in names {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let path = dir.join(format!("{name}.{}", self::name(stream)));
                if path.symlink_metadata().is_ok() {
                    return Err(format!(
                        "{} is there already: --out-dir writes new files only (use an empty directory); nothing was run",
                        path.display()
                    ));
                }
            }
        }
        Ok(Self {
            dir: dir.into(),
            files: names.iter().map(|_| [None, None]).collect(),
            written: vec![[0; 2]; names.len()],
            per_stream,
            names: names.to_vec(),
        })
    }

    /// Writes a piece of output to its file, up to the cap.
    pub fn write(&mut self, host: usize, stream: Stream, data: &[u8]) {
        let i = index(stream);
        let room = self.per_stream.saturating_sub(self.written[host][i]);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
        if take > 0 && self.append(host, stream, &data[..take]) {
            self.written[host][i] += take as u64;
        }
    }

    /// Ends a server's files with `notes` on its stderr (what went wrong, what was
    /// cut); both files exist afterwards, empty if nothing came.
    pub fn finish(&mut self, host: usize, stdout_extra: &str, notes: &[String]) {
        self.append(host, Stream::Stdout, stdout_extra.as_bytes());
        let tail: String = notes.iter().map(|n| format!("cmdchan: {n}\n")).collect();
        self.append(host, Stream::Stderr, tail.as_bytes());
        self.files[host] = [None, None];
    }

    /// Appends to the file, making it on first use; false (said once) if it cannot be.
    fn append(&mut self, host: usize, stream: Stream, data: &[u8]) -> bool {
        let slot = &mut self.files[host][index(stream)];
        if slot.is_none() {
            let path = self
                .dir
                .join(format!("{}.{}", self.names[host], name(stream)));
            match create(&path) {
                Ok(file) => *slot = Some(file),
                Err(e) => {
                    eprintln!("cmdchan: cannot write {}: {e}", path.display());
                    self.per_stream = self.per_stream.min(self.written[host][index(stream)]);
                    return false;
                }
            }
        }
        match slot.as_mut().map(|f| f.write_all(data)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                eprintln!(
                    "cmdchan: cannot write {}'s {}: {e}",
                    self.names[host],
                    name(stream)
                );
                *slot = None;
                false
            }
            None => false,
        }
    }
}

/// A new file, mode 0600 from the umask up: not through a link, not over a file.
fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}
