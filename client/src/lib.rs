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

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use openssl::ssl::SslContext;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tokio_util::codec::{FramedRead, FramedWrite};

pub use cmdchan_common::credential::{Credential, ZoneEntry, ZoneError};
pub use cmdchan_common::ident::Ident;
pub use cmdchan_common::protocol::{self, ALIVE_EVERY};
pub use cmdchan_common::protocol::{
    Alive, Body, ClientMsg, CommandId, CommandInfo, ErrorCode, ExitInfo, Failure, Grant, JobInfo,
    JobState, Output, Param, ParamInfo, ParamKind, Reply, Request, Response, Started, Stream,
    Whoami,
};

mod answer;
pub mod approval;
mod connect;
mod error;
pub mod exit;
pub mod fanout;
pub mod input;
pub mod inventory;
mod jobs;
pub mod json;

use answer::Each;
pub use answer::{AnswerSink, Flow};
pub use error::Error;
pub use input::{Input, SharedInput};
pub use jobs::Follow;

use cmdchan_common::frame::{MsgCodec, DEFAULT_MAX_FRAME};
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
    /// Longest time without a sign of life while waiting for an answer: a server shows
    /// one every [`ALIVE_EVERY`] while it works on a request, so this is how long a
    /// server that stopped answering is waited for, not a limit on the command.
    pub answer_timeout: Duration,
    pub max_frame: usize,
    /// Reconnects [`Client::run_with_retry`] may make after a lost connection.
    pub retries: u32,
    /// The newest signed revocation list this client knows (its text form): given to a
    /// server whose handshake names an older one, or none, before anything else.
    pub revocations: Option<Arc<KnownList>>,
    /// Wait before the first retry; doubled for each next one.
    pub retry_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            zone: None,
            target: None,
            timeout: Duration::from_secs(10),
            answer_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            revocations: None,
        }
    }
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
    /// The revocation list version the server's handshake named (none: it keeps none).
    server_list: Option<u64>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
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
        let given = addr
            .or(self.cred.address.as_deref())
            .ok_or(Error::NoAddress)?;
        let addr = inventory::address(given, None).map_err(|_| Error::BadAddress(given.into()))?;
        let target = target(&entry.grant, &addr, opts.target.clone())?;
        let channel = connect::open(&self.ctx, &zone, &addr, &opts).await?;
        let mut client = Client {
            channel,
            connector: self.clone(),
            zone,
            target,
            next_counter: 1,
            addr,
            opts,
            input: None,
        };
        client.give_revocations().await?;
        Ok(client)
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

    /// Gives the server the revocation list this client knows if its handshake named an
    /// older one (or none): a server that was down when the list was pushed learns it
    /// from the next client that reaches it. Its answer does not matter here (a server
    /// that cannot check lists refuses it); only a lost connection is an error.
    async fn give_revocations(&mut self) -> Result<(), Error> {
        let Some(known) = self.opts.revocations.clone() else {
            return Ok(());
        };
        if self.channel.server_list.is_some_and(|v| v >= known.version) {
            return Ok(());
        }
        let request = self.request("revocations.push", std::slice::from_ref(&known.text))?;
        match self.answer(&request, &mut Each(|_: &Output| {})).await {
            Err(e) if e.is_connection_lost() => Err(e),
            _ => Ok(()),
        }
    }

    /// The revocation list version the server's handshake named (none: it keeps none).
    pub fn server_revocations(&self) -> Option<u64> {
        self.channel.server_list
    }

    /// The zone this client speaks in (the server's).
    pub fn zone(&self) -> &Ident {
        &self.zone
    }

    /// Like [`Client::run`], but if the connection is lost before the answer, connects
    /// again and sends the same request (same command ID and issue time; the counter of
    /// the new connection), up to `Options::retries` times with doubling backoff. The
    /// server runs a command ID at most once, so a retry gets the first run's answer (or
    /// `in progress`), never a second run. Output already given to `on_output` may come
    /// again in the repeated answer.
    pub async fn run_with_retry(
        &mut self,
        request: &mut Request,
        on_output: impl FnMut(&Output) + Send,
    ) -> Result<Reply, Error> {
        self.deliver(request, &mut Each(on_output)).await
    }

    /// [`Client::run_with_retry`] into a sink that may wait (see [`AnswerSink`]).
    pub async fn deliver(
        &mut self,
        request: &mut Request,
        sink: &mut impl AnswerSink,
    ) -> Result<Reply, Error> {
        let mut backoff = self.opts.retry_backoff;
        for _ in 0..self.opts.retries {
            match self.answer(request, sink).await {
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
        self.answer(request, sink).await
    }

    /// Replaces the connection with a new one; its counter starts again at 1.
    pub async fn reconnect(&mut self) -> Result<(), Error> {
        self.channel =
            connect::open(&self.connector.ctx, &self.zone, &self.addr, &self.opts).await?;
        self.next_counter = 1;
        Ok(())
    }

    /// Sends `command` with positional `args` and returns the reply (a program's output
    /// is dropped; see [`Client::run`]), or the server's refusal as [`Error::Refused`].
    pub async fn call(&mut self, command: &str, args: &[String]) -> Result<Reply, Error> {
        let request = self.request(command, args)?;
        self.run(&request, |_| {}).await
    }

    /// Sends `request`, hands each piece of program output to `sink` as it arrives, and
    /// returns the final reply or the refusal.
    pub async fn run(
        &mut self,
        request: &Request,
        on_output: impl FnMut(&Output) + Send,
    ) -> Result<Reply, Error> {
        self.answer(request, &mut Each(on_output)).await
    }

    /// Sends `request` once (no retry), hands its output to `sink`, and returns the
    /// reply or the refusal.
    pub async fn answer(
        &mut self,
        request: &Request,
        sink: &mut impl AnswerSink,
    ) -> Result<Reply, Error> {
        match self.send(request, sink).await?.body {
            Body::Ok(reply) => Ok(reply),
            Body::Err(failure) => Err(Error::Refused(failure)),
            _ => Err(Error::Protocol(
                "the answer ended without a final frame".into(),
            )),
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
            detach: false,
            run: None,
            approval: None,
        })
    }

    /// Sends `request` exactly as given and returns the final response that names it
    /// (or a connection-level error, which names counter 0); program output is dropped.
    pub async fn exchange(&mut self, request: &Request) -> Result<Response, Error> {
        self.exchange_streaming(request, |_| {}).await
    }

    /// As [`Client::exchange`], handing each piece of output to `sink`; a program that
    /// takes stdin gets the input set with [`Client::set_input`]. The server is held to
    /// the protocol (see [`answer`]).
    pub async fn exchange_streaming(
        &mut self,
        request: &Request,
        on_output: impl FnMut(&Output) + Send,
    ) -> Result<Response, Error> {
        self.send(request, &mut Each(on_output)).await
    }

    /// Sends `request` and reads its answer.
    async fn send(
        &mut self,
        request: &Request,
        sink: &mut impl AnswerSink,
    ) -> Result<Response, Error> {
        let Some(writer) = self.channel.writer.as_mut() else {
            return Err(Error::Closed);
        };
        writer
            .send(&ClientMsg::Request(request.clone()))
            .await
            .map_err(Error::of_frame)?;
        let silence = self.opts.answer_timeout;
        answer::read(&mut self.channel, request, &mut self.input, silence, sink).await
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

/// A signed revocation list a client carries: its version and its text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownList {
    pub version: u64,
    pub text: String,
}

impl KnownList {
    /// Reads a list's text form (not checked: a client has no key to check it with; the
    /// servers do).
    pub fn parse(text: &str) -> Result<Self, String> {
        let signed =
            cmdchan_common::revocation::SignedList::from_text(text).map_err(|e| e.to_string())?;
        Ok(Self {
            version: signed.list.version,
            text: signed.to_text(),
        })
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
