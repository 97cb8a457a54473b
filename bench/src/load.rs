//! The load generator. The orchestrator runs it as its own process
//! (`cmdchan-bench load …`), so its CPU is never counted as the server's; it prints one
//! JSON [`Outcome`] on stdout.
//!
//! Every contender is driven by this same code: only what goes on the wire differs (a
//! cmdchan `ping` request, or 64 bytes for an echo server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use openssl::ssl::SslContext;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_openssl::SslStream;
use tokio_util::codec::{Decoder, Encoder};

use cmdchan_common::credential::Credential;
use cmdchan_common::frame::{MsgCodec, DEFAULT_MAX_FRAME};
use cmdchan_common::ident::Ident;
use cmdchan_common::protocol::{Body, ClientMsg, Reply, Request, Response};
use cmdchan_common::{time, tls};

/// Size of one echo message.
pub const ECHO_LEN: usize = 64;

/// What the server on the other end understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Speak {
    /// cmdchan requests (`ping`).
    Cmdchan,
    /// 64-byte messages that come back unchanged.
    Echo,
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Full handshakes, each on a new connection that is closed right after.
    Handshake,
    /// Round trips on connections opened beforehand.
    RoundTrip,
    /// Open connections, use each once, report `ready` and hold them until stdin closes.
    Idle,
}

#[derive(Debug, clap::Args)]
pub struct LoadOpts {
    #[arg(long)]
    pub addr: SocketAddr,
    /// Credential whose identity and PSK every contender is keyed with.
    #[arg(long)]
    pub cred: PathBuf,
    #[arg(long, value_enum)]
    pub speak: Speak,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Connections (or handshakes in parallel).
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The one TLS suite to offer [default: all of cmdchan's].
    #[arg(long)]
    pub cipher: Option<String>,
    /// Also report the operations completed in each second (`slices`).
    #[arg(long)]
    pub slices: bool,
    /// Key the TLS handshake with this file's `IDENTITY:HEXPSK` line (stunnel's
    /// PSKsecrets format, as `admin psk` prints it) instead of the credential's sealed
    /// identity: for contenders that know one fixed identity.
    #[arg(long)]
    pub psk: Option<PathBuf>,
}

/// What one load run measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Operations completed in the measured window (a handshake or one answered request).
    pub ops: u64,
    pub seconds: f64,
    /// Latency of one batch (one request when depth is 1, or one handshake), in µs.
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// With `--slices`: operations completed in each second of the run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slices: Vec<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

/// Runs the load described by `opts` and prints its outcome as JSON.
pub fn main(opts: LoadOpts) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(run(opts))?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

async fn run(opts: LoadOpts) -> anyhow::Result<Outcome> {
    let cred = Arc::new(Credential::load(&opts.cred).context("loading the credential")?);
    let mut ctx = match &opts.psk {
        Some(path) => fixed_builder(path)?,
        None => tls::client_builder(Arc::clone(&cred))?,
    };
    if let Some(cipher) = &opts.cipher {
        ctx.set_cipher_list(cipher)?;
    }
    let (zone, entry) = cred.zone(None)?;
    let load = Arc::new(Load {
        zone: zone.clone(),
        ctx: ctx.build(),
        addr: opts.addr,
        target: entry
            .grant
            .servers
            .first()
            .cloned()
            .context("the credential names no server to address")?,
        cred,
        speak: opts.speak,
        depth: opts.depth.max(1),
        length: Duration::from_secs_f64(opts.seconds),
        slices: opts.slices,
    });
    match opts.mode {
        Mode::Handshake => spread(&load, opts.conns, handshakes).await,
        Mode::RoundTrip => spread(&load, opts.conns, round_trips).await,
        Mode::Idle => idle(&load, opts.conns).await,
    }
}

/// A client context keyed with the `IDENTITY:HEXPSK` line in `path`.
fn fixed_builder(path: &std::path::Path) -> anyhow::Result<openssl::ssl::SslContextBuilder> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (identity, hex) = text
        .trim()
        .split_once(':')
        .context("the PSK file holds no IDENTITY:HEXPSK line")?;
    let psk = cmdchan_common::keys::Psk::from_hex(hex).context("the PSK is not 64 hex digits")?;
    Ok(tls::fixed_client_builder(identity, &psk)?)
}

struct Load {
    ctx: SslContext,
    /// The credential's one zone.
    zone: Ident,
    addr: SocketAddr,
    cred: Arc<Credential>,
    target: Ident,
    speak: Speak,
    depth: usize,
    length: Duration,
    slices: bool,
}

/// What one task measured.
#[derive(Default)]
struct Tally {
    ops: u64,
    /// Operations completed in each second since the start, if asked for.
    slices: Vec<u64>,
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn failed(&mut self, e: anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{e:#}"));
    }
}

/// What one task measured, and when it stopped.
type Run = Pin<Box<dyn std::future::Future<Output = (Tally, Instant)> + Send>>;

type Task = fn(Arc<Load>, Arc<Barrier>) -> Run;

/// Runs `task` on `n` tasks that start together; merges what they measured.
async fn spread(load: &Arc<Load>, n: usize, task: Task) -> anyhow::Result<Outcome> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(task(Arc::clone(load), Arc::clone(&barrier))))
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut all = Tally::default();
    let mut ended = started;
    for t in tasks {
        let (tally, end) = t.await?;
        ended = ended.max(end);
        all.ops += tally.ops;
        all.errors += tally.errors;
        all.latencies_us.extend(tally.latencies_us);
        all.first_error = all.first_error.or(tally.first_error);
        if all.slices.len() < tally.slices.len() {
            all.slices.resize(tally.slices.len(), 0);
        }
        for (sum, n) in all.slices.iter_mut().zip(tally.slices) {
            *sum += n;
        }
    }
    all.latencies_us.sort_unstable();
    Ok(Outcome {
        ops: all.ops,
        seconds: ended.duration_since(started).as_secs_f64(),
        p50_us: percentile(&all.latencies_us, 0.50),
        p99_us: percentile(&all.latencies_us, 0.99),
        errors: all.errors,
        first_error: all.first_error,
        slices: all.slices,
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[at])
}

fn handshakes(load: Arc<Load>, barrier: Arc<Barrier>) -> Run {
    Box::pin(async move {
        let mut tally = Tally::default();
        barrier.wait().await;
        let deadline = Instant::now() + load.length;
        while Instant::now() < deadline {
            let began = Instant::now();
            match connect(&load).await {
                Ok(mut stream) => {
                    tally.ops += 1;
                    tally.latencies_us.push(micros(began));
                    let _ = stream.shutdown().await;
                }
                Err(e) => tally.failed(e),
            }
        }
        (tally, Instant::now())
    })
}

fn round_trips(load: Arc<Load>, barrier: Arc<Barrier>) -> Run {
    Box::pin(async move {
        let mut tally = Tally::default();
        let conn = connect(&load).await;
        barrier.wait().await;
        let start = Instant::now();
        let deadline = start + load.length;
        let mut conn = match conn {
            Ok(stream) => Conn::new(stream, &load),
            Err(e) => {
                tally.failed(e);
                return (tally, Instant::now());
            }
        };
        while Instant::now() < deadline {
            let began = Instant::now();
            if let Err(e) = conn.exchange(load.depth).await {
                tally.failed(e);
                break;
            }
            tally.ops += load.depth as u64;
            tally.latencies_us.push(micros(began));
            if load.slices {
                let second = usize::try_from(start.elapsed().as_secs()).unwrap_or(usize::MAX);
                if tally.slices.len() <= second {
                    tally.slices.resize(second + 1, 0);
                }
                tally.slices[second] += load.depth as u64;
            }
        }
        let end = Instant::now();
        let _ = conn.stream.shutdown().await;
        (tally, end)
    })
}

/// Opens `n` connections (16 at a time), uses each once, says `ready`, then holds them
/// until stdin closes.
async fn idle(load: &Arc<Load>, n: usize) -> anyhow::Result<Outcome> {
    let mut held = Vec::with_capacity(n);
    let started = Instant::now();
    while held.len() < n {
        let batch = (n - held.len()).min(16);
        let opened: Vec<_> = (0..batch)
            .map(|_| {
                let load = Arc::clone(load);
                tokio::spawn(async move {
                    let mut conn = Conn::new(connect(&load).await?, &load);
                    conn.exchange(1).await?;
                    anyhow::Ok(conn)
                })
            })
            .collect();
        for conn in opened {
            held.push(conn.await??);
        }
    }
    println!("ready {}", held.len());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    Ok(Outcome {
        ops: held.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        ..Outcome::default()
    })
}

async fn connect(load: &Load) -> anyhow::Result<SslStream<TcpStream>> {
    let tcp = TcpStream::connect(load.addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let mut stream = SslStream::new(tls::client_ssl(&load.ctx, &load.zone)?, tcp)?;
    Pin::new(&mut stream)
        .connect()
        .await
        .context("TLS handshake")?;
    Ok(stream)
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// One connection and what it needs to speak.
struct Conn {
    stream: SslStream<TcpStream>,
    speaker: Speaker,
    out: BytesMut,
    inp: BytesMut,
}

impl Conn {
    fn new(stream: SslStream<TcpStream>, load: &Load) -> Self {
        let speaker = match load.speak {
            Speak::Echo => Speaker::Echo,
            Speak::Cmdchan => Speaker::Cmdchan(Box::new(Pinger::new(&load.cred, &load.target))),
        };
        Self {
            stream,
            speaker,
            out: BytesMut::with_capacity(4096),
            inp: BytesMut::with_capacity(4096),
        }
    }

    /// Sends `n` requests in one write, then reads their `n` answers.
    async fn exchange(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.speaker.request(&mut self.out)?;
        }
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        let mut answered = 0;
        while answered < n {
            if self.speaker.answer(&mut self.inp)? {
                answered += 1;
                continue;
            }
            if self.stream.read_buf(&mut self.inp).await? == 0 {
                bail!("the server closed the connection after {answered} of {n} answers");
            }
        }
        Ok(())
    }
}

enum Speaker {
    Echo,
    Cmdchan(Box<Pinger>),
}

impl Speaker {
    fn request(&mut self, out: &mut BytesMut) -> anyhow::Result<()> {
        match self {
            Speaker::Echo => out.extend_from_slice(&[0x5a; ECHO_LEN]),
            Speaker::Cmdchan(p) => p.request(out)?,
        }
        Ok(())
    }

    /// Takes one whole answer off `inp`; false if it has not all arrived yet.
    fn answer(&mut self, inp: &mut BytesMut) -> anyhow::Result<bool> {
        match self {
            Speaker::Echo if inp.len() >= ECHO_LEN => {
                inp.advance(ECHO_LEN);
                Ok(true)
            }
            Speaker::Echo => Ok(false),
            Speaker::Cmdchan(p) => p.answer(inp),
        }
    }
}

/// Builds `ping` requests as the cmdchan client does (next counter, fresh random ID,
/// current time) and checks that each answer is the pong for the oldest one unanswered.
///
/// IDs come from OpenSSL's generator like the client's, but drawn [`ID_POOL`] bytes at a
/// time: a draw costs the same for 16 bytes as for 4 KiB, and on a machine the load
/// generator shares with the server, every microsecond it spends is one the server
/// does not get.
struct Pinger {
    template: ClientMsg,
    codec: MsgCodec<Response, ClientMsg>,
    answered: u64,
    ids: Vec<u8>,
}

/// Random bytes drawn at once for request IDs (256 IDs).
const ID_POOL: usize = 4096;

impl Pinger {
    fn new(cred: &Credential, target: &Ident) -> Self {
        // The bench's credential has one zone (checked when the load started).
        let (grant, tag) = cred
            .zone(None)
            .map(|(_, e)| (e.grant.clone(), e.tag))
            .unwrap_or_else(|_| unreachable!("the load checked the credential's zone"));
        Self {
            template: ClientMsg::Request(Request {
                counter: 0,
                id: [0; 16],
                issued_at: 0,
                target: target.clone(),
                grant,
                tag,
                command: "ping".into(),
                args: Vec::new(),
                params: Vec::new(),
                detach: false,
                run: None,
                approval: None,
            }),
            codec: MsgCodec::new(DEFAULT_MAX_FRAME),
            answered: 0,
            ids: Vec::new(),
        }
    }

    fn request(&mut self, out: &mut BytesMut) -> anyhow::Result<()> {
        let ClientMsg::Request(r) = &mut self.template else {
            unreachable!("the template is a request")
        };
        r.counter += 1;
        if self.ids.is_empty() {
            self.ids.resize(ID_POOL, 0);
            openssl::rand::rand_bytes(&mut self.ids)?;
        }
        let at = self.ids.len() - r.id.len();
        r.id.copy_from_slice(&self.ids[at..]);
        self.ids.truncate(at);
        r.issued_at = time::now();
        self.codec.encode(&self.template, out)?;
        Ok(())
    }

    fn answer(&mut self, inp: &mut BytesMut) -> anyhow::Result<bool> {
        let Some(response) = self.codec.decode(inp)? else {
            return Ok(false);
        };
        self.answered += 1;
        match response.body {
            Body::Ok(Reply::Pong) if response.counter == self.answered => Ok(true),
            Body::Err(failure) => bail!("refused: {}: {}", failure.code, failure.message),
            other => bail!(
                "request {} got answer {} with body {other:?}",
                self.answered,
                response.counter
            ),
        }
    }
}
