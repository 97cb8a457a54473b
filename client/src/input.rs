//! A program's stdin: one reader for one server, or one stdin shared by a fan-out. The
//! shared one is read whole, once, when the first server's program says it takes stdin
//! (so a command that takes none never swallows the caller's stdin, as `ssh -n` would
//! have to be told), and every server gets the same bytes, as clush and `pssh -I` send.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cmdchan_common::sync;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::OnceCell;

/// Where a program's stdin comes from, when the program takes it.
pub type Input = Box<dyn AsyncRead + Unpin + Send>;

/// The most stdin a fan-out holds to give every server.
pub const SHARED_LIMIT: usize = 64 << 20;

/// One stdin for many servers; clone it for each.
#[derive(Clone)]
pub struct SharedInput {
    inner: Arc<Inner>,
}

struct Inner {
    source: Mutex<Option<Input>>,
    whole: OnceCell<Result<Arc<[u8]>, String>>,
    limit: usize,
}

impl std::fmt::Debug for SharedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedInput")
            .field("limit", &self.inner.limit)
            .finish_non_exhaustive()
    }
}

impl SharedInput {
    /// Shares `source`, read whole (at most `limit` bytes) on first use.
    pub fn new(source: Input, limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                source: Mutex::new(Some(source)),
                whole: OnceCell::new(),
                limit,
            }),
        }
    }

    /// A reader of the whole stdin for one server. Reading it fails, for every server
    /// alike, if the stdin cannot be read or is larger than the limit: no server gets a
    /// part of it as if it were all.
    pub fn reader(&self) -> Input {
        Box::new(Reader {
            shared: self.clone(),
            reading: None,
            whole: None,
            at: 0,
        })
    }

    async fn whole(self) -> Result<Arc<[u8]>, String> {
        let inner = &self.inner;
        inner
            .whole
            .get_or_init(|| async {
                let source = sync::lock(&inner.source).take();
                let Some(source) = source else {
                    return Err("stdin was taken already".to_owned());
                };
                read_whole(source, inner.limit).await
            })
            .await
            .clone()
    }
}

async fn read_whole(source: Input, limit: usize) -> Result<Arc<[u8]>, String> {
    let mut bytes = Vec::new();
    let read = source.take(limit as u64 + 1).read_to_end(&mut bytes).await;
    match read {
        Err(e) => Err(e.to_string()),
        Ok(_) if bytes.len() > limit => Err(format!(
            "it is larger than {} MiB, the most a fan-out holds to send to every server",
            limit >> 20
        )),
        Ok(_) => Ok(bytes.into()),
    }
}

type Whole = Pin<Box<dyn Future<Output = Result<Arc<[u8]>, String>> + Send>>;

/// One server's view of the shared stdin.
struct Reader {
    shared: SharedInput,
    reading: Option<Whole>,
    whole: Option<Arc<[u8]>>,
    at: usize,
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.whole.is_none() {
            let shared = this.shared.clone();
            let reading = this.reading.get_or_insert_with(|| Box::pin(shared.whole()));
            match reading.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(why)) => return Poll::Ready(Err(io::Error::other(why))),
                Poll::Ready(Ok(whole)) => {
                    this.reading = None;
                    this.whole = Some(whole);
                }
            }
        }
        let whole = this.whole.as_deref().unwrap_or_default();
        let rest = whole.get(this.at..).unwrap_or_default();
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(mut input: Input) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        input.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn every_reader_gets_the_whole_stdin_read_once() {
        let shared = SharedInput::new(Box::new(&b"hello\n"[..]), 100);
        let (a, b) = (shared.reader(), shared.reader());
        assert_eq!(read(a).await.expect("read"), b"hello\n");
        assert_eq!(read(b).await.expect("read"), b"hello\n");
    }

    #[tokio::test]
    async fn a_stdin_over_the_limit_fails_every_reader_and_gives_none_a_part() {
        let shared = SharedInput::new(Box::new(&[7u8; 101][..]), 100);
        for reader in [shared.reader(), shared.reader()] {
            let err = read(reader).await.expect_err("too large");
            assert!(err.to_string().contains("larger than"), "{err}");
        }
    }
}
