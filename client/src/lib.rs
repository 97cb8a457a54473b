//! The cmdchan client library: connect with a credential, send commands, read replies.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cmdchan::{Client, Credential, Options};
//! let cred = Credential::load("alice.cred".as_ref())?;
//! let mut client = Client::connect(cred, Some("db1.example:7433"), Options::default()).await?;
//! let reply = client.call("whoami", &[]).await?;
//! println!("{reply:?}");
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! A [`Client`] owns one TLS connection and its request counter; every request gets a
//! fresh random command ID and the current time. Errors are [`Error`] values: a refusal
//! from the server is [`Error::Refused`] with the server's stable code.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openssl::error::ErrorStack;
use openssl::ssl::SslContext;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;
use tokio_util::codec::{FramedRead, FramedWrite};

pub use cmdchan_common::credential::{Credential, ZoneEntry, ZoneError};
pub use cmdchan_common::ident::Ident;
pub use cmdchan_common::protocol::{
    Body, ClientMsg, CommandInfo, ErrorCode, ExitInfo, Failure, Grant, Output, Param, ParamInfo,
    ParamKind, Reply, Request, Response, Started, Stream, Whoami,
};

pub mod fanout;
pub mod inventory;

use cmdchan_common::frame::{FrameError, MsgCodec, DEFAULT_MAX_FRAME};
use cmdchan_common::{time, tls};

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The zone the server is meant to be in. Default: the credential's only zone (a
    /// credential of several zones must be told). A server that names another zone is
    /// refused before anything is sent.
    pub zone: Option<Ident>,
    /// The server ID to address. Default: the grant's only server if it names exactly
    /// one, else the host part of the server address.
    pub target: Option<Ident>,
    /// Limit for connecting plus handshake.
    pub timeout: Duration,
    /// Longest silence while waiting for an answer. The server bounds each program by
    /// its own timeout; this guards against a server that stops answering.
    pub answer_timeout: Duration,
    pub max_frame: usize,
    /// Reconnects [`Client::run_with_retry`] may make after a lost connection.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub retry_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            zone: None,
            target: None,
            timeout: Duration::from_secs(10),
            answer_timeout: Duration::from_secs(600),
            max_frame: DEFAULT_MAX_FRAME,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// Why a call failed. Each variant is one thing the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no server address: pass --server HOST:PORT or provision the credential with --address"
    )]
    NoAddress,
    #[error("cannot tell which server ID {0:?} is: pass --server-id ID")]
    NoTarget(String),
    #[error("{0}")]
    Zone(#[from] ZoneError),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS handshake with {addr} failed: {detail}. The server refused this credential's key (the name is unknown to it, the key or the zone key's generation differs, or the epoch is wrong), or it offers no TLS 1.2 (EC)DHE-PSK suite; the server's log says which")]
    Handshake { addr: String, detail: String },
    #[error("{addr} closed the connection before any TLS reply: the server turned this address away before looking at any key (not in its allow list, penalized for failed handshakes or refusals, or over a connection limit); the server's log says which")]
    RefusedBeforeTls { addr: String },
    #[error("what answers at {addr} does not speak TLS ({detail}): is this the cmdchan port?")]
    NotTls { addr: String, detail: String },
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection without answering")]
    Closed,
    #[error("the connection was lost: {0}")]
    Lost(io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{}: {}", .0.code, .0.message)]
    Refused(Failure),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] ErrorStack),
}

type Codec = MsgCodec<Response, ClientMsg>;
type Reader = FramedRead<ReadHalf<SslStream<TcpStream>>, Codec>;
type Writer = FramedWrite<WriteHalf<SslStream<TcpStream>>, Codec>;

/// One connection, its halves apart: a program's stdin goes out while its output comes
/// in, so neither side waits on the other.
struct Channel {
    reader: Reader,
    /// `None` while a stdin pump has it, or after one was cut short (the connection is
    /// then done for: a request on it reconnects).
    writer: Option<Writer>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

/// Where a program's stdin comes from, when the program takes it.
pub type Input = Box<dyn AsyncRead + Unpin + Send>;

impl Error {
    /// The connection broke before the answer came: the request may or may not have
    /// reached the server, so only a retry with the same command ID is safe.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Closed | Error::Lost(_) | Error::Connect { .. } | Error::Timeout(_)
        )
    }
}

/// A credential made ready to connect: its TLS context is built once (about 120 µs of
/// OpenSSL set-up) and shared by every connection made from it, a fan-out's thousands
/// included; the zone is chosen per connection.
#[derive(Clone)]
pub struct Connector {
    cred: Arc<Credential>,
    ctx: SslContext,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("cred", &self.cred)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(cred: Arc<Credential>) -> Result<Self, Error> {
        let ctx = tls::client_context(Arc::clone(&cred))?;
        Ok(Self { cred, ctx })
    }

    pub fn credential(&self) -> &Credential {
        &self.cred
    }

    /// Connects to `addr` (or the credential's address) and completes the TLS-PSK
    /// handshake with the entry of the zone `opts.zone` names (or the credential's only
    /// zone); a server that names another zone is refused before anything is sent.
    pub async fn connect(&self, addr: Option<&str>, opts: Options) -> Result<Client, Error> {
        let (zone, entry) = self.cred.zone(opts.zone.as_ref().map(Ident::as_str))?;
        let zone = zone.clone();
        let addr = addr
            .or(self.cred.address.as_deref())
            .ok_or(Error::NoAddress)?
            .to_owned();
        let target = target(&entry.grant, &addr, opts.target.clone())?;
        let channel = open(&self.ctx, &zone, &addr, &opts).await?;
        Ok(Client {
            channel,
            connector: self.clone(),
            zone,
            target,
            next_counter: 1,
            addr,
            opts,
            input: None,
        })
    }
}

/// One authenticated connection to a cmdchan server.
pub struct Client {
    channel: Channel,
    /// The credential and its context, for requests and reconnecting.
    connector: Connector,
    /// The zone this client speaks in: the one it meant, which the server named.
    zone: Ident,
    target: Ident,
    next_counter: u64,
    addr: String,
    opts: Options,
    /// Given to the next program that takes stdin (see [`Client::set_input`]).
    input: Option<Input>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("zone", &self.zone)
            .field("target", &self.target)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with `cred` (see [`Connector::connect`]); to make many connections with
    /// one credential, make a [`Connector`] once.
    pub async fn connect(
        cred: Credential,
        addr: Option<&str>,
        opts: Options,
    ) -> Result<Self, Error> {
        Connector::new(Arc::new(cred))?.connect(addr, opts).await
    }

    /// Stdin for the next program that takes it (`stdin = true` in the server's policy):
    /// streamed to it as it is read, its end closing the program's stdin. Nothing is
    /// read from it unless the server says the program takes stdin.
    pub fn set_input(&mut self, input: Input) {
        self.input = Some(input);
    }

    /// The zone this client speaks in (the server's).
    pub fn zone(&self) -> &Ident {
        &self.zone
    }

    /// Like [`Client::run`], but if the connection is lost before the answer, connects
    /// again and sends the same request (same command ID and issue time; the counter of
    /// the new connection), up to `Options::retries` times with doubling backoff. The
    /// server runs a command ID at most once, so a retry gets the first run's answer (or
    /// `in progress`), never a second run. Output already passed to `on_output` may come
    /// again in the repeated answer.
    pub async fn run_with_retry(
        &mut self,
        request: &mut Request,
        mut on_output: impl FnMut(&Output),
    ) -> Result<Reply, Error> {
        let mut backoff = self.opts.retry_backoff;
        for _ in 0..self.opts.retries {
            match self.run(request, &mut on_output).await {
                Err(e) if e.is_connection_lost() => {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    if self.reconnect().await.is_ok() {
                        request.counter = self.next_counter;
                        self.next_counter += 1;
                    }
                }
                other => return other,
            }
        }
        self.run(request, on_output).await
    }

    /// Replaces the connection with a new one; its counter starts again at 1.
    pub async fn reconnect(&mut self) -> Result<(), Error> {
        self.channel = open(&self.connector.ctx, &self.zone, &self.addr, &self.opts).await?;
        self.next_counter = 1;
        Ok(())
    }

    /// Sends `command` with positional `args` and returns the reply (a program's output
    /// is dropped; see [`Client::run`]), or the server's refusal as [`Error::Refused`].
    pub async fn call(&mut self, command: &str, args: &[String]) -> Result<Reply, Error> {
        let request = self.request(command, args)?;
        self.run(&request, |_| {}).await
    }

    /// Sends `request`, hands each piece of program output to `on_output` as it arrives,
    /// and returns the final reply or the refusal.
    pub async fn run(
        &mut self,
        request: &Request,
        on_output: impl FnMut(&Output),
    ) -> Result<Reply, Error> {
        match self.exchange_streaming(request, on_output).await?.body {
            Body::Ok(reply) => Ok(reply),
            Body::Err(failure) => Err(Error::Refused(failure)),
            Body::Output(_) | Body::Started(_) => {
                Err(Error::Protocol("the answer ended with output".into()))
            }
        }
    }

    /// Builds the next request: next counter, fresh random ID, current time, this
    /// credential's grant and tag. Use with [`Client::exchange`] to send it as is.
    pub fn request(&mut self, command: &str, args: &[String]) -> Result<Request, Error> {
        let mut id = [0u8; 16];
        openssl::rand::rand_bytes(&mut id)?;
        let counter = self.next_counter;
        self.next_counter += 1;
        let (_, entry) = self.connector.cred.zone(Some(self.zone.as_str()))?;
        let (grant, tag) = (entry.grant.clone(), entry.tag);
        Ok(Request {
            counter,
            id,
            issued_at: time::now(),
            target: self.target.clone(),
            grant,
            tag,
            command: command.to_owned(),
            args: args.to_vec(),
            params: Vec::new(),
        })
    }

    /// Sends `request` exactly as given and returns the final response that names it
    /// (or a connection-level error, which names counter 0); program output is dropped.
    pub async fn exchange(&mut self, request: &Request) -> Result<Response, Error> {
        self.exchange_streaming(request, |_| {}).await
    }

    /// As [`Client::exchange`], handing each piece of output to `on_output`; a program
    /// that takes stdin gets the input set with [`Client::set_input`].
    pub async fn exchange_streaming(
        &mut self,
        request: &Request,
        mut on_output: impl FnMut(&Output),
    ) -> Result<Response, Error> {
        let Some(writer) = self.channel.writer.as_mut() else {
            return Err(Error::Closed);
        };
        writer
            .send(&ClientMsg::Request(request.clone()))
            .await
            .map_err(frame_error)?;
        let mut pump: Option<tokio::task::JoinHandle<Option<Writer>>> = None;
        let answer = loop {
            let limit = self.opts.answer_timeout;
            let next = match timeout(limit, self.channel.reader.next()).await {
                Ok(next) => next,
                Err(_) => break Err(Error::Timeout(limit)),
            };
            let response = match next
                .ok_or(Error::Closed)
                .and_then(|r| r.map_err(frame_error))
            {
                Ok(response) => response,
                Err(e) => break Err(e),
            };
            let names_it = response.counter == request.counter && response.id == request.id;
            match (&response.body, names_it) {
                (Body::Output(out), true) => on_output(out),
                (Body::Started(_), true) => {
                    match self.input.take() {
                        Some(input) => {
                            if let Some(writer) = self.channel.writer.take() {
                                pump =
                                    Some(tokio::spawn(send_input(writer, input, request.counter)));
                            }
                        }
                        // No input set: the program's stdin ends at once rather than
                        // waiting for input that never comes.
                        None => {
                            if let Some(writer) = self.channel.writer.as_mut() {
                                let end = ClientMsg::InputEnd(request.counter);
                                if let Err(e) = writer.send(&end).await {
                                    break Err(frame_error(e));
                                }
                            }
                        }
                    }
                }
                (_, true) => break Ok(response),
                (Body::Err(_), false) if response.counter == 0 => break Ok(response),
                _ => {
                    break Err(Error::Protocol(format!(
                        "the server answered request {} while request {} was waiting",
                        response.counter, request.counter
                    )))
                }
            }
        };
        // The answer is in: a pump still reading (the program ended before its input
        // did) is cut short, and the connection with it.
        if let Some(pump) = pump {
            if pump.is_finished() {
                self.channel.writer = pump.await.ok().flatten();
            } else {
                pump.abort();
            }
        }
        answer
    }

    /// The server ID this client addresses.
    pub fn target(&self) -> &Ident {
        &self.target
    }

    /// Ends the connection cleanly (TLS close_notify).
    pub async fn close(self) {
        if let Some(writer) = self.channel.writer {
            let stream = self
                .channel
                .reader
                .into_inner()
                .unsplit(writer.into_inner());
            let mut stream = stream;
            let _ = stream.shutdown().await;
        }
    }
}

async fn open(
    ctx: &SslContext,
    zone: &Ident,
    addr: &str,
    opts: &Options,
) -> Result<Channel, Error> {
    let stream = timeout(opts.timeout, handshake(ctx, zone, addr))
        .await
        .map_err(|_| Error::Timeout(opts.timeout))??;
    let (read, write) = tokio::io::split(stream);
    Ok(Channel {
        reader: FramedRead::new(read, MsgCodec::new(opts.max_frame)),
        writer: Some(FramedWrite::new(write, MsgCodec::new(opts.max_frame))),
    })
}

/// Sends `input` as the stdin of request `counter`, then its end; gives the writer back
/// (`None` if the connection broke).
async fn send_input(mut writer: Writer, mut input: Input, counter: u64) -> Option<Writer> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let message = match n {
            0 => ClientMsg::InputEnd(counter),
            n => ClientMsg::Input(cmdchan_common::protocol::Input {
                counter,
                data: buf[..n].to_vec(),
            }),
        };
        writer.send(&message).await.ok()?;
        if n == 0 {
            return Some(writer);
        }
    }
}

async fn handshake(
    ctx: &SslContext,
    zone: &Ident,
    addr: &str,
) -> Result<SslStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut stream = SslStream::new(tls::client_ssl(ctx, zone)?, tcp)?;
    if let Err(e) = Pin::new(&mut stream).connect().await {
        if let Some(refused) = tls::zone_refusal(stream.ssl()) {
            return Err(Error::Zone(refused));
        }
        return Err(handshake_failed(addr, stream.ssl(), &e));
    }
    Ok(stream)
}

/// Tells apart why a handshake failed: a TLS alert (the key, the suites), a connection
/// closed before any TLS reply (turned away before TLS), or something that is not TLS.
fn handshake_failed(addr: &str, ssl: &openssl::ssl::SslRef, e: &openssl::ssl::Error) -> Error {
    let detail = e.ssl_error().map_or_else(|| e.to_string(), alert_reason);
    let addr = addr.to_owned();
    if detail.contains("wrong version number") || detail.contains("packet length too long") {
        return Error::NotTls { addr, detail };
    }
    // Still writing or waiting for the first server message: nothing TLS came back.
    let state = ssl.state_string_long();
    let nothing_back = state.contains("client hello") || state.contains("before");
    let lower = detail.to_ascii_lowercase();
    let closed =
        e.io_error().is_some() || lower.contains("unexpected eof") || lower.contains("syscall");
    if nothing_back && closed && !lower.contains("alert") {
        return Error::RefusedBeforeTls { addr };
    }
    Error::Handshake { addr, detail }
}

/// OpenSSL's reason for the failure ("sslv3 alert bad record mac"), without the noise.
fn alert_reason(stack: &ErrorStack) -> String {
    let reasons: Vec<_> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    match reasons.is_empty() {
        true => stack.to_string(),
        false => reasons.join("; "),
    }
}

fn frame_error(e: FrameError) -> Error {
    match e {
        FrameError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Error::Closed,
        FrameError::Io(e) => Error::Lost(e),
        FrameError::Truncated => Error::Closed,
        other => Error::Protocol(other.to_string()),
    }
}

/// Picks the server ID to address (see [`Options::target`]).
fn target(grant: &Grant, addr: &str, explicit: Option<Ident>) -> Result<Ident, Error> {
    if let Some(id) = explicit {
        return Ok(id);
    }
    if let [only] = grant.servers.as_slice() {
        return Ok(only.clone());
    }
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    Ident::new(host).map_err(|_| Error::NoTarget(host.to_owned()))
}
