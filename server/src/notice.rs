//! Shutdown and reload notices for open connections.
//!
//! Why not a `CancellationToken` and a `watch` channel: waiting on either registers the
//! waiting task under a lock that every connection shares, and a connection waits once
//! per request, so under load the runtime's threads queued on that lock. Here a
//! connection registers once, when it opens; between requests it stores its waker in a
//! cell of its own and reads two atomics.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cmdchan_common::sync;
use futures::task::AtomicWaker;

/// What a connection is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The server is shutting down: finish the request in hand, take no more.
    Stop,
    /// Settings were reloaded: look again whether this client is still welcome.
    Reload,
}

/// The server's side: says stop or reload to every listener.
#[derive(Debug, Default)]
pub struct Notices {
    stopping: AtomicBool,
    reloads: AtomicU64,
    listeners: Mutex<Listeners>,
}

#[derive(Debug, Default)]
struct Listeners {
    next: u64,
    wakers: HashMap<u64, Arc<AtomicWaker>>,
}

/// One connection's side; dropping it unregisters.
#[derive(Debug)]
pub struct Listener {
    notices: Arc<Notices>,
    waker: Arc<AtomicWaker>,
    id: u64,
    /// The reload count this listener has been told about.
    seen: u64,
}

impl Notices {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A listener that hears every notice given from now on (and a stop given before).
    pub fn listen(self: &Arc<Self>) -> Listener {
        let waker = Arc::new(AtomicWaker::new());
        let mut listeners = self.lock();
        let id = listeners.next;
        listeners.next += 1;
        listeners.wakers.insert(id, Arc::clone(&waker));
        Listener {
            notices: Arc::clone(self),
            waker,
            id,
            seen: self.reloads.load(Ordering::SeqCst),
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    pub fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        self.wake_all();
    }

    fn wake_all(&self) {
        for waker in self.lock().wakers.values() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listeners> {
        sync::lock(&self.listeners)
    }
}

impl Listener {
    /// A notice given since the last one this listener returned, without waiting. A
    /// stop is returned every time once given; a reload once per reload seen.
    pub fn check(&mut self) -> Option<Notice> {
        if self.notices.stopping.load(Ordering::SeqCst) {
            return Some(Notice::Stop);
        }
        let reloads = self.notices.reloads.load(Ordering::SeqCst);
        if reloads != self.seen {
            self.seen = reloads;
            return Some(Notice::Reload);
        }
        None
    }

    /// Waits for the next notice.
    pub async fn next(&mut self) -> Notice {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Notice> {
        // Register before looking, so a notice given in between still wakes this task.
        self.waker.register(cx.waker());
        match self.check() {
            Some(notice) => Poll::Ready(notice),
            None => Poll::Pending,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.notices.lock().wakers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_listener_hears_a_reload_then_a_stop() {
        let notices = Notices::new();
        let mut listener = notices.listen();
        assert_eq!(listener.check(), None);
        let waiting = tokio::spawn(async move {
            let first = listener.next().await;
            let second = listener.next().await;
            (first, second, listener.check())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        notices.reloaded();
        tokio::time::sleep(Duration::from_millis(20)).await;
        notices.stop();
        let heard = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(
            heard,
            (Notice::Reload, Notice::Stop, Some(Notice::Stop)),
            "a reload once, a stop for good"
        );
    }

    #[test]
    fn a_listener_hears_only_what_came_after_it_but_a_stop_always() {
        let notices = Notices::new();
        notices.reloaded();
        let mut late = notices.listen();
        assert_eq!(late.check(), None, "an earlier reload is not news");
        assert!(late.next().now_or_never().is_none());
        notices.stop();
        assert_eq!(notices.listen().check(), Some(Notice::Stop));
        drop(late);
        assert!(
            notices.lock().wakers.is_empty(),
            "a dropped listener unregisters"
        );
    }
}
