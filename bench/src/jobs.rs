//! `cmdchan-bench jobs`: the job store at scale, and what the output digests cost.
//!
//! 1. N results (1,000,000 by default) go through the store's own path (start, output,
//!    end), their ends spread over the last day: the files and bytes they take against
//!    the bounds (64 files, the result cap).
//! 2. A real server opens that store: how long its start takes and its memory, then
//!    `job status` of 10,000 of those IDs through the client library, in batches of
//!    1000 on one connection: the wall time against 1 s.
//! 3. The same `job status` of 10,000 IDs where a pool of processes keeps its jobs: in
//!    a real redis-server (filled through the server's own Redis store).
//! 4. The digests' price, two ways. A backup (`gzip -1` of 128 MiB of text, the kind of
//!    output-heavy job this is for): SHA-256 of what it printed against the CPU of the
//!    whole run, the program's and the server's: at most 3 %. A program that does no
//!    work for its bytes (`head -c 256M /dev/zero`): SHA-256 against the server's CPU
//!    alone, with the rate SHA-256 would need for 3 % there and the rates this machine
//!    has (the implementation the server uses, and OpenSSL's) — the floor, not a
//!    target.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use cmdchan::{Client, Credential, JobState, Options, Reply, Stream};
use cmdchan_common::protocol::JOBS_AT_ONCE;
use cmdchan_common::time;
use cmdchan_server::jobs::store::{Bounds, End, Meta, Store};
use cmdchan_server::jobs::{Jobs, Place};

use crate::contenders::{Keys, Running, Tools, NAME};

const RETENTION: u64 = 24 * 3600;
const RESULT_CAP: u64 = 1 << 30;
const MAX_FILES: usize = 64;
const STATUS_IN: f64 = 1.0;
const DIGEST_SHARE: f64 = 0.03;
/// What the output-heavy command prints.
const FLOOD: u64 = 256 << 20;

pub fn main(results: usize, asked: usize) -> anyhow::Result<ExitCode> {
    let tools = Tools::find()?;
    let keys = Keys::provision(&tools)?;
    let dir = keys.dir.path().join("jobs");
    let mut met = fill(&dir, results)?;

    let policy = keys.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roles.bench]\ncommands = [\"flood\", \"backup\"]\n[commands.flood]\nprogram = \"/usr/bin/head\"\n\
             args = [\"-c\", \"{FLOOD}\", \"/dev/zero\"]\noutput_limit = {}\ntimeout = \"120s\"\n\
             [commands.backup]\nprogram = \"/bin/gzip\"\nargs = [\"-1\", \"-c\", \"{}\"]\n\
             output_limit = {}\ntimeout = \"120s\"\n",
            FLOOD * 2,
            text_file(keys.dir.path())?.display(),
            FLOOD * 2
        ),
    )?;
    let began = Instant::now();
    let server = Running::cmdchan_with(
        &tools,
        &keys,
        NAME,
        &policy,
        &[OsStr::new("--job-store"), dir.as_os_str()],
    )?;
    let opened = began.elapsed();
    println!(
        "a server opens the store of {results} results in {:.1} s and holds {:.0} MiB",
        opened.as_secs_f64(),
        server.rss_kib()? as f64 / 1024.0
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cred = Credential::load(&keys.cred)?;
    let mut client = runtime.block_on(Client::connect(
        cred,
        Some(&server.addr.to_string()),
        Options::default(),
    ))?;
    met &= runtime.block_on(status(&mut client, results, asked))?;
    met &= in_redis(&tools, &keys, &policy, &runtime, asked)?;
    met &= runtime.block_on(digests(&mut client, &server))?;
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The ID of result `i`.
fn id_of(i: usize) -> [u8; 16] {
    (i as u128 + 1).to_be_bytes()
}

/// Writes `results` ended jobs through the store, ends spread over the last day; true
/// if they fit the file and byte bounds.
fn fill(dir: &Path, results: usize) -> anyhow::Result<bool> {
    let bounds = Bounds {
        retention: RETENTION,
        per_job: 16 << 20,
        total: RESULT_CAP,
    };
    let now = time::now();
    let mut store = Store::open(dir, bounds, now)?;
    let output = [b'x'; 100];
    let began = Instant::now();
    for i in 0..results {
        let id = id_of(i);
        let ended_at = now - RETENTION + 600 + (i as u64 * (RETENTION - 1200)) / results as u64;
        store.start(Meta {
            id,
            client: NAME.into(),
            command: "backup".into(),
            run: None,
            started_at: ended_at - 60,
        })?;
        store.output(&id, Stream::Stdout, &output)?;
        store.end(
            &id,
            End {
                state: JobState::Exited(0),
                ended_at,
                output_bytes: output.len() as u64,
                digests: [openssl::sha::sha256(&output), openssl::sha::sha256(b"")],
            },
        )?;
    }
    let took = began.elapsed();
    drop(store);
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        files += 1;
        bytes += meta.len();
    }
    println!(
        "{results} results of 100 bytes each written in {:.1} s ({:.1} µs each): {files} files (at most {MAX_FILES}), {:.0} MiB (cap {:.0} MiB)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / results as f64,
        bytes as f64 / (1 << 20) as f64,
        RESULT_CAP as f64 / (1 << 20) as f64
    );
    let met = files <= MAX_FILES && bytes <= RESULT_CAP;
    println!("files and bytes within bounds — {}", verdict(met));
    Ok(met)
}

/// [`status`] against a server whose jobs are in a real redis-server, filled with
/// `asked` ended jobs through the server's own Redis store.
fn in_redis(
    tools: &Tools,
    keys: &Keys,
    policy: &Path,
    runtime: &tokio::runtime::Runtime,
    asked: usize,
) -> anyhow::Result<bool> {
    let port = crate::contenders::free_port()?;
    let dir = keys.dir.path().join("redis");
    std::fs::create_dir_all(&dir)?;
    let redis = Killed(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting redis-server (apt install redis-server)")?,
    );
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if began.elapsed().as_secs() > 10 {
            bail!("redis-server (pid {}) did not listen", redis.0.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let url = format!("redis://127.0.0.1:{port}/0");
    let bounds = Bounds {
        retention: RETENTION,
        per_job: 16 << 20,
        total: RESULT_CAP,
    };
    let now = time::now();
    let jobs = Jobs::open(&Place::Redis(url.clone()), NAME, bounds, now)?;
    let output = [b'x'; 100];
    let began = Instant::now();
    runtime.block_on(async {
        for i in 0..asked {
            let id = id_of(i);
            jobs.start(Meta {
                id,
                client: NAME.into(),
                command: "backup".into(),
                run: None,
                started_at: now - 60,
            })
            .await?;
            jobs.output(&id, Stream::Stdout, &output, 0).await?;
            let digests = [openssl::sha::sha256(&output), openssl::sha::sha256(b"")];
            let end = End {
                state: JobState::Exited(0),
                ended_at: now,
                output_bytes: output.len() as u64,
                digests,
            };
            jobs.end(&id, end).await?;
        }
        anyhow::Ok(())
    })?;
    println!(
        "{asked} results written into Redis in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let server = Running::cmdchan_with(
        tools,
        keys,
        NAME,
        policy,
        &[OsStr::new("--replay-store"), OsStr::new(&url)],
    )?;
    let cred = Credential::load(&keys.cred)?;
    runtime.block_on(async {
        let addr = server.addr.to_string();
        let mut client = Client::connect(cred, Some(&addr), Options::default()).await?;
        print!("in a pool's Redis: ");
        status(&mut client, asked, asked).await
    })
}

/// A child process killed (by its PID) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `job status` of `asked` of the results, in batches on one connection: true within
/// [`STATUS_IN`].
async fn status(client: &mut Client, results: usize, asked: usize) -> anyhow::Result<bool> {
    let step = (results / asked.max(1)).max(1);
    let ids: Vec<String> = (0..asked)
        .map(|n| hex::encode(id_of((n * step) % results)))
        .collect();
    // One batch first: the connection and its first request are not what is measured.
    client.call("job.status", &ids[..1]).await?;
    let began = Instant::now();
    let mut seen = 0;
    for batch in ids.chunks(JOBS_AT_ONCE) {
        match client.call("job.status", batch).await? {
            Reply::Jobs(jobs) if jobs.iter().all(|j| j.state == JobState::Exited(0)) => {
                seen += jobs.len()
            }
            other => bail!("job.status answered {other:?}"),
        }
    }
    let took = began.elapsed().as_secs_f64();
    let met = seen == asked && took < STATUS_IN;
    println!(
        "job status of {asked} IDs: {:.0} ms (under {:.0} ms) — {}",
        took * 1e3,
        STATUS_IN * 1e3,
        verdict(met)
    );
    Ok(met)
}

/// What the digests cost: against a backup's whole run (the target) and against the
/// server's CPU for a program that does no work for its bytes (the floor).
async fn digests(client: &mut Client, server: &Running) -> anyhow::Result<bool> {
    let sha2_rate = hash_rate(|piece, n| {
        let mut hash = Sha256::new();
        for _ in 0..n {
            hash.update(piece);
        }
        std::hint::black_box(hash.finalize());
    })?;
    let openssl_rate = hash_rate(|piece, n| {
        let mut hash = openssl::sha::Sha256::new();
        for _ in 0..n {
            hash.update(piece);
        }
        std::hint::black_box(hash.finish());
    })?;

    let (printed, cpu) = run_measured(client, server, "backup").await?;
    let hashing = printed as f64 / sha2_rate;
    let share = hashing / (cpu - hashing).max(1e-9);
    let met = share <= DIGEST_SHARE;
    println!(
        "a backup (gzip -1 of {} MiB of text) prints {:.0} MiB for {:.2} s of CPU (program and server): SHA-256 of it {:.3} s: the digests add {:.1} % (at most {:.0} %) — {}",
        TEXT >> 20,
        printed as f64 / (1 << 20) as f64,
        cpu,
        hashing,
        share * 100.0,
        DIGEST_SHARE * 100.0,
        verdict(met)
    );

    let (printed, cpu) = run_measured(client, server, "flood").await?;
    let hashing = printed as f64 / sha2_rate;
    let rest = (cpu - hashing).max(1e-9);
    println!(
        "a program that does no work for its bytes (head -c {} MiB of /dev/zero): it and the server spend {:.2} s of CPU, SHA-256 of it {:.3} s: {:.1} %; 3 % there would need SHA-256 at {:.0} MiB/s, and this machine has {:.0} MiB/s (sha2, what the server uses) and {:.0} MiB/s (OpenSSL) — the floor, not a target",
        FLOOD >> 20,
        cpu,
        hashing,
        hashing / rest * 100.0,
        printed as f64 / (rest * DIGEST_SHARE) / (1 << 20) as f64,
        sha2_rate / (1 << 20) as f64,
        openssl_rate / (1 << 20) as f64,
    );
    Ok(met)
}

/// Runs `command` to its end: the bytes it printed, and the CPU the server and the
/// programs it waited for spent meanwhile.
async fn run_measured(
    client: &mut Client,
    server: &Running,
    command: &str,
) -> anyhow::Result<(u64, f64)> {
    let before = server.cpu_with_children_seconds()?;
    let mut received = 0u64;
    let request = client.request(command, &[])?;
    let reply = client
        .run(&request, |out| received += out.data.len() as u64)
        .await?;
    if !matches!(reply, Reply::Exit(ref e) if e.code == Some(0)) {
        bail!("{command} printed {received} bytes: {reply:?}");
    }
    // The program is waited for (and its CPU counted) just after the answer.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok((received, server.cpu_with_children_seconds()? - before))
}

/// Bytes per second `hash` digests, over [`FLOOD`] bytes in 16 KiB pieces, in CPU time.
fn hash_rate(hash: impl FnOnce(&[u8], u64)) -> anyhow::Result<f64> {
    let piece = vec![0u8; 16 << 10];
    let n = FLOOD / piece.len() as u64;
    let took = cpu_seconds(|| hash(&piece, n))?;
    Ok(FLOOD as f64 / took.max(1e-9))
}

/// Bytes of text the backup compresses.
const TEXT: u64 = 128 << 20;

/// A file of [`TEXT`] bytes of numbered lines (compressible like logs), in `dir`.
fn text_file(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join("backup.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let (mut n, mut written) = (0u64, 0u64);
    while written < TEXT {
        let line = format!(
            "{n} backup line of the bench, entry {}\n",
            n * 7919 % 100_003
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        n += 1;
    }
    out.flush()?;
    Ok(path)
}

/// CPU (user + system) of this process in `work`, in seconds.
fn cpu_seconds(work: impl FnOnce()) -> anyhow::Result<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let now = || -> anyhow::Result<f64> {
        let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
    };
    let before = now()?;
    work();
    Ok(now()? - before)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
