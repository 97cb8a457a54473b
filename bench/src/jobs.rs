//! `cmdchan-bench jobs`: the job store at scale, and what the output digests cost.
//!
//! 1. N results (1,000,000 by default) go through the store's own path (start, output,
//!    end), their ends spread over the last day: the files and bytes they take against
//!    the bounds (64 files, the result cap).
//! 2. A real server opens that store: how long its start takes and its memory, then
//!    `job status` of 10,000 of those IDs through the client library, in batches of
//!    1000 on one connection: the wall time against 1 s.
//! 3. The digests' price: the server's CPU for a command that prints 256 MiB
//!    (measured on its process) against the CPU SHA-256 takes for those bytes in this
//!    process, with the implementation the server uses: at most 3 %.

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
            "[roles.bench]\ncommands = [\"flood\"]\n[commands.flood]\nprogram = \"/usr/bin/head\"\n\
             args = [\"-c\", \"{FLOOD}\", \"/dev/zero\"]\noutput_limit = {}\ntimeout = \"120s\"\n",
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

/// The server's CPU for a command printing [`FLOOD`] bytes against SHA-256's for them:
/// true if the digests are at most [`DIGEST_SHARE`] of the rest.
async fn digests(client: &mut Client, server: &Running) -> anyhow::Result<bool> {
    let before = server.cpu_seconds()?;
    let wall = Instant::now();
    let mut received = 0u64;
    let request = client.request("flood", &[])?;
    let reply = client
        .run(&request, |out| received += out.data.len() as u64)
        .await?;
    let server_cpu = server.cpu_seconds()? - before;
    let wall = wall.elapsed().as_secs_f64();
    if received != FLOOD || !matches!(reply, Reply::Exit(ref e) if e.code == Some(0)) {
        bail!("flood printed {received} bytes: {reply:?}");
    }
    let piece = vec![0u8; 16 << 10];
    let hashing = cpu_seconds(|| {
        let mut hash = Sha256::new();
        for _ in 0..FLOOD / piece.len() as u64 {
            hash.update(&piece);
        }
        std::hint::black_box(hash.finalize());
    })?;
    let share = hashing / (server_cpu - hashing).max(1e-9);
    let met = share <= DIGEST_SHARE;
    println!(
        "a command printing {} MiB in {:.2} s: the server spends {:.2} s of CPU, SHA-256 of it {:.3} s ({:.0} MiB/s): the digests add {:.1} % (at most {:.0} %) — {}",
        FLOOD >> 20,
        wall,
        server_cpu,
        hashing,
        FLOOD as f64 / (1 << 20) as f64 / hashing.max(1e-9),
        share * 100.0,
        DIGEST_SHARE * 100.0,
        verdict(met)
    );
    Ok(met)
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
