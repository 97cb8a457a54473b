//! Where a pipelined request's server CPU goes, cmdchan beside the ceiling: `perf record`
//! samples the server while the load generator runs, and each sampled function is put in
//! one category by its library and name. The shares times the CPU per request give µs
//! per request per category, so a regression shows where it is, not only that it is.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// The categories, in the order of the table; the first rule that matches wins.
pub const CATEGORIES: [&str; 14] = [
    "kernel (TCP, syscalls, scheduling)",
    "TLS records (libssl, libcrypto, tokio-openssl)",
    "clock reads (vDSO)",
    "allocator (malloc, free)",
    "memory copies (libc)",
    "locks and syscall wrappers (libc)",
    "SHA-256 (audit MAC, request digest)",
    "audit record",
    "replay claim",
    "admission (tag, rate, policy)",
    "frames (decode, encode)",
    "metrics",
    "async runtime (tokio)",
    "connection loop and the rest",
];

/// Microseconds of server CPU per request in each category.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    pub us: [f64; CATEGORIES.len()],
}

/// A `perf record` of one process, running until the profiled window ends.
pub struct Profile {
    child: Child,
}

impl Profile {
    /// Samples `pid` (999 Hz, all its threads) for `seconds` into `out`.
    pub fn start(pid: u32, seconds: f64, out: &Path) -> anyhow::Result<Self> {
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "999", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .args(["--", "sleep", &format!("{seconds:.1}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running perf (apt-get install -y linux-perf)")?;
        Ok(Self { child })
    }

    /// Waits for the record, then splits `cpu_us` (per request) by category.
    pub fn finish(mut self, out: &Path, cpu_us: f64) -> anyhow::Result<Breakdown> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!("perf record failed ({status}); is perf_event_paranoid too strict?");
        }
        let report = Command::new("perf")
            .args([
                "report",
                "-q",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,sym",
                "-i",
            ])
            .arg(out)
            .stderr(Stdio::null())
            .output()
            .context("running perf report")?;
        let mut shares = [0.0; CATEGORIES.len()];
        for line in String::from_utf8_lossy(&report.stdout).lines() {
            if let Some((percent, dso, sym)) = parse(line) {
                shares[category(dso, sym)] += percent / 100.0;
            }
        }
        let total: f64 = shares.iter().sum();
        if total <= 0.0 {
            bail!("perf recorded no samples");
        }
        let mut b = Breakdown::default();
        for (us, share) in b.us.iter_mut().zip(shares) {
            *us = cpu_us * share / total;
        }
        Ok(b)
    }
}

/// `  8.32%  cmdchan-server  [.] sha2::sha256::compress` → (8.32, dso, symbol).
fn parse(line: &str) -> Option<(f64, &str, &str)> {
    let line = line.trim_start();
    let (percent, rest) = line.split_once(char::is_whitespace)?;
    let percent = percent.strip_suffix('%')?.parse().ok()?;
    let (dso, rest) = rest.trim_start().split_once(char::is_whitespace)?;
    // The third column is `[.]` or `[k]`; the symbol is all that follows it.
    let (_, sym) = rest.trim_start().split_once(char::is_whitespace)?;
    Some((percent, dso, sym.trim()))
}

/// The category of a sampled function.
fn category(dso: &str, sym: &str) -> usize {
    let has = |words: &[&str]| words.iter().any(|w| sym.contains(w));
    let index = |name: &str| {
        CATEGORIES
            .iter()
            .position(|c| c.starts_with(name))
            .unwrap_or(0)
    };
    if dso.contains("kernel") {
        return index("kernel");
    }
    if dso.contains("libssl") || dso.contains("libcrypto") || has(&["tokio_openssl", "openssl::"]) {
        return index("TLS");
    }
    if dso.contains("vdso") || has(&["clock_gettime", "Timespec"]) {
        return index("clock");
    }
    if dso.contains("libc") {
        let allocator = [
            "malloc",
            "free",
            "realloc",
            "calloc",
            "_int_",
            "tcache",
            "unlink_chunk",
        ];
        return match () {
            _ if has(&allocator) => index("allocator"),
            _ if has(&["mem", "str"]) => index("memory"),
            _ => index("locks"),
        };
    }
    let rules: [(&[&str], &str); 8] = [
        (&["sha2::"], "SHA-256"),
        (&["audit::", "serde_json", "batch::", "Stamp"], "audit"),
        (&["replay::", "crc32fast"], "replay"),
        (
            &["admit::", "rate::", "tag::", "hmac", "policy::", "cmd::"],
            "admission",
        ),
        (
            &["postcard", "serde_core", "frame::", "protocol::", "codec"],
            "frames",
        ),
        (&["prometheus", "metrics::"], "metrics"),
        (&["tokio", "mio::", "futures"], "async"),
        (&["malloc", "alloc::"], "allocator"),
    ];
    rules
        .iter()
        .find(|(words, _)| has(words))
        .map_or(index("connection"), |(_, name)| index(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_line_is_split_into_share_library_and_symbol() {
        let line = "     8.32%  cmdchan-server     [.] sha2::sha256::x86_sha::compress";
        let (p, dso, sym) = parse(line).expect("a report line");
        assert_eq!(
            (p, dso, sym),
            (8.32, "cmdchan-server", "sha2::sha256::x86_sha::compress")
        );
        assert_eq!(
            CATEGORIES[category(dso, sym)],
            "SHA-256 (audit MAC, request digest)"
        );
        assert_eq!(
            CATEGORIES[category("[vdso]", "__vdso_clock_gettime")],
            "clock reads (vDSO)"
        );
        assert_eq!(category("cmdchan-server", "main"), CATEGORIES.len() - 1);
        let kernel = parse("  6.36%  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore");
        assert_eq!(
            kernel,
            Some((6.36, "[kernel.kallsyms]", "_raw_spin_unlock_irqrestore"))
        );
        assert_eq!(
            CATEGORIES[category("libc.so.6", "__lll_lock_wake_private")],
            "locks and syscall wrappers (libc)"
        );
        assert_eq!(
            CATEGORIES[category("libc.so.6", "cfree@GLIBC_2.2.5")],
            "allocator (malloc, free)"
        );
    }
}
