//! One answer as the client reads it. Whatever a server sends is hostile input: every
//! frame must name the request, only a program has output or takes stdin (and says so
//! once, before its output), a built-in's reply is of its own kind, and a server that
//! sends nothing at all, not even its once-a-second sign of life, is given up on.

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use cmdchan_common::protocol::{
    self, Alive, Body, ClientMsg, Output, ReplyKind, Request, Response,
};

use crate::{Channel, Error, Input, Writer};

/// Whether to go on reading an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// Stop now (the output has nowhere to go: a closed pipe): the call ends with
    /// [`Error::Stopped`] and the connection is dropped, so the server stops the program
    /// as for any client that left.
    Stop,
}

/// Where an answer's output goes as it arrives. A plain closure takes each piece at once;
/// an implementation that waits (a bounded channel) slows the connection to its own pace,
/// so nothing piles up in memory however much a server sends.
pub trait AnswerSink {
    fn output(&mut self, out: Output) -> impl Future<Output = Flow> + Send;

    /// A sign of life from the server; `Recording`: the program ended and the server
    /// waits for its store to keep the outcome before it answers.
    fn alive(&mut self, _alive: Alive) {}
}

/// A closure as an [`AnswerSink`] that takes each piece at once.
pub(crate) struct Each<F>(pub F);

impl<F: FnMut(&Output) + Send> AnswerSink for Each<F> {
    fn output(&mut self, out: Output) -> impl Future<Output = Flow> + Send {
        (self.0)(&out);
        std::future::ready(Flow::Go)
    }
}

/// Reads the answer to `request` (already sent) up to its final response; output goes to
/// `sink`, and a program that takes stdin gets `input` (or an empty stdin). A response
/// with counter 0 is a connection-level error, returned as the final one.
pub(crate) async fn read(
    channel: &mut Channel,
    request: &Request,
    input: &mut Option<Input>,
    silence: Duration,
    sink: &mut impl AnswerSink,
) -> Result<Response, Error> {
    let (kind, has_output) = protocol::answer_kind(request);
    // Only a program (attached) takes stdin.
    let program = kind == ReplyKind::Exit;
    let mut pump: Option<JoinHandle<Result<Writer, Error>>> = None;
    let mut seen_output = false;
    let answer = loop {
        let next = tokio::select! {
            next = timeout(silence, channel.reader.next()) => next,
            pumped = wait(&mut pump), if pump.is_some() => {
                pump = None;
                match pumped {
                    Ok(writer) => channel.writer = Some(writer),
                    Err(e) => break Err(e),
                }
                continue;
            }
        };
        let response = match next {
            Err(_) => break Err(Error::Silent(silence)),
            Ok(None) => break Err(Error::Closed),
            Ok(Some(Err(e))) => break Err(Error::of_frame(e)),
            Ok(Some(Ok(response))) => response,
        };
        if response.counter == 0 && matches!(response.body, Body::Err(_)) {
            break Ok(response);
        }
        if response.counter != request.counter || response.id != request.id {
            break Err(Error::Protocol(format!(
                "the server answered request {} while request {} was waiting",
                response.counter, request.counter
            )));
        }
        match response.body {
            Body::Output(out) if has_output => {
                seen_output = true;
                if sink.output(out).await == Flow::Stop {
                    break Err(Error::Stopped);
                }
            }
            Body::Started(_) if program && !seen_output && pump.is_none() => {
                seen_output = true;
                match start_input(channel, input.take(), request.counter).await {
                    Ok(started) => pump = started,
                    Err(e) => break Err(e),
                }
            }
            Body::Alive(alive) => sink.alive(alive),
            Body::Ok(ref reply) if reply.kind() != kind => {
                break Err(Error::Protocol(format!(
                    "the server answered {} with a reply of another kind",
                    printable_command(request)
                )))
            }
            Body::Ok(_) | Body::Err(_) => break Ok(response),
            Body::Output(_) | Body::Started(_) => {
                break Err(Error::Protocol(unexpected(
                    &response.body,
                    program,
                    request,
                )))
            }
        }
    };
    // The answer is in: a pump still reading (the program ended before its input did)
    // is cut short, and the connection with it.
    if let Some(pump) = pump {
        if pump.is_finished() {
            channel.writer = pump.await.ok().and_then(Result::ok);
        } else {
            pump.abort();
        }
    }
    answer
}

/// The program takes stdin: `input` is pumped to it from a task of its own (so its
/// output keeps coming in meanwhile), or, with none, its stdin ends at once.
async fn start_input(
    channel: &mut Channel,
    input: Option<Input>,
    counter: u64,
) -> Result<Option<JoinHandle<Result<Writer, Error>>>, Error> {
    let Some(mut writer) = channel.writer.take() else {
        return Err(Error::Closed);
    };
    match input {
        Some(input) => Ok(Some(tokio::spawn(pump(writer, input, counter)))),
        None => {
            let end = ClientMsg::InputEnd(counter);
            writer.send(&end).await.map_err(Error::of_frame)?;
            channel.writer = Some(writer);
            Ok(None)
        }
    }
}

/// Sends `input` as the stdin of request `counter`, then its end; gives the writer back.
/// A read that fails ends the call without `InputEnd`: the program must not take part
/// of its input for all of it.
async fn pump(mut writer: Writer, mut input: Input, counter: u64) -> Result<Writer, Error> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = input.read(&mut buf).await.map_err(Error::Input)?;
        let message = match n {
            0 => ClientMsg::InputEnd(counter),
            n => ClientMsg::Input(protocol::Input {
                counter,
                data: buf[..n].to_vec(),
            }),
        };
        writer.send(&message).await.map_err(Error::of_frame)?;
        if n == 0 {
            return Ok(writer);
        }
    }
}

/// Waits for the pump, if there is one (the caller polls this only when there is).
async fn wait(pump: &mut Option<JoinHandle<Result<Writer, Error>>>) -> Result<Writer, Error> {
    match pump {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| Err(Error::Protocol(format!("the stdin task failed: {e}")))),
        None => std::future::pending().await,
    }
}

/// Why `body` has no place in this answer.
fn unexpected(body: &Body, program: bool, request: &Request) -> String {
    let command = printable_command(request);
    match (body, program) {
        (Body::Started(_), false) => {
            format!("the server asked for stdin for {command}, which takes none")
        }
        (Body::Output(_), _) => {
            format!("the server sent output for {command}, which has none")
        }
        _ => format!("the server asked for stdin for {command} twice, or after its output"),
    }
}

fn printable_command(request: &Request) -> String {
    cmdchan_common::ident::printable(request.command.as_bytes())
}
