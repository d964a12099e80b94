//! The cancel request as job code sees it (CANCEL-3): something to poll,
//! to wait for, and to be called back on.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// A cancel request: the server's (`cancel`, CTRL-4) or a SIGTERM's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// `"requested"`, `"timeout"`, `"shutdown"`, `"sigterm"`, ...
    pub reason: String,
    /// How long the server waits for the terminal message (CANCEL-2), when
    /// it said.
    pub deadline_ms: Option<u64>,
}

type Callback = Box<dyn FnOnce(&CancelRequest) + Send>;

#[derive(Default)]
struct State {
    request: Option<CancelRequest>,
    callbacks: Vec<Callback>,
    wakers: Vec<Waker>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    state: Mutex<State>,
    cv: Condvar,
}

/// Tells job code that the job should stop. The wrapper never ends the job
/// by itself: the job code decides how to stop, then returns (an error fails
/// the job, a value completes it, CANCEL-4). Cheap to clone and to poll;
/// `Send` and `Sync`, so it can go to other threads.
///
/// ```
/// use std::time::Duration;
/// use extjob_worker::CancelToken;
///
/// let token = CancelToken::new();
/// let seen = token.clone();
/// let waiter = std::thread::spawn(move || seen.wait_timeout(Duration::from_secs(10)));
/// token.request("requested", Some(5000));
/// assert_eq!(waiter.join().unwrap().unwrap().reason, "requested");
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("request", &self.get())
            .finish()
    }
}

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Whether a cancel was requested (a poll: one atomic load).
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// The request, once there is one.
    pub fn get(&self) -> Option<CancelRequest> {
        self.lock().request.clone()
    }

    /// Blocks until a cancel is requested.
    pub fn wait(&self) -> CancelRequest {
        let mut st = self.lock();
        loop {
            if let Some(r) = &st.request {
                return r.clone();
            }
            st = self.0.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until a cancel is requested or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<CancelRequest> {
        let until = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(r) = &st.request {
                return Some(r.clone());
            }
            let left = until.checked_duration_since(Instant::now())?;
            st = self
                .0
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Calls `callback` once a cancel is requested, on a thread of its own
    /// (at once if it already was).
    pub fn on_cancel(&self, callback: impl FnOnce(&CancelRequest) + Send + 'static) {
        let mut st = self.lock();
        match st.request.clone() {
            None => st.callbacks.push(Box::new(callback)),
            Some(r) => {
                drop(st);
                call_back(vec![Box::new(callback)], r);
            }
        }
    }

    /// Requests a cancel; the first request wins. The wrapper calls this on
    /// the server's `cancel` and on SIGTERM; job code may call it too (for
    /// example from its own deadline).
    pub fn request(&self, reason: impl Into<String>, deadline_ms: Option<u64>) {
        let mut st = self.lock();
        if st.request.is_some() {
            return;
        }
        let request = CancelRequest {
            reason: reason.into(),
            deadline_ms,
        };
        st.request = Some(request.clone());
        let callbacks = std::mem::take(&mut st.callbacks);
        let wakers = std::mem::take(&mut st.wakers);
        self.0.cancelled.store(true, Ordering::Release);
        self.0.cv.notify_all();
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
        if !callbacks.is_empty() {
            call_back(callbacks, request);
        }
    }

    /// A future that resolves to the request once there is one. It needs no
    /// particular runtime: tokio, smol or a hand-made executor all drive it
    /// (there is no `tokio` feature because none is needed).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll, Wake};
    /// use extjob_worker::CancelToken;
    ///
    /// struct Unpark(std::thread::Thread);
    /// impl Wake for Unpark {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.unpark()
    ///     }
    /// }
    /// fn block_on<F: std::future::Future>(f: F) -> F::Output {
    ///     let mut f = std::pin::pin!(f);
    ///     let waker = Arc::new(Unpark(std::thread::current())).into();
    ///     let mut cx = Context::from_waker(&waker);
    ///     loop {
    ///         if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
    ///             return v;
    ///         }
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// let token = CancelToken::new();
    /// let server = token.clone();
    /// std::thread::spawn(move || server.request("timeout", Some(0)));
    /// assert_eq!(block_on(token.cancelled()).reason, "timeout");
    /// ```
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            token: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The future of [`CancelToken::cancelled`].
#[derive(Debug, Clone)]
#[must_use = "futures do nothing unless polled"]
pub struct Cancelled {
    token: CancelToken,
}

impl Future for Cancelled {
    type Output = CancelRequest;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CancelRequest> {
        let mut st = self.token.lock();
        if let Some(r) = &st.request {
            return Poll::Ready(r.clone());
        }
        // One waker per task, however often a select loop polls it.
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Callbacks never run on the thread that reads the socket.
fn call_back(callbacks: Vec<Callback>, request: CancelRequest) {
    let _ = thread::Builder::new()
        .name("extjob-cancel".into())
        .spawn(move || {
            for callback in callbacks {
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&request)));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn cancel_3_the_first_request_wins_and_callbacks_run_once() {
        let token = CancelToken::new();
        let (tx, rx) = mpsc::channel();
        let early = tx.clone();
        token.on_cancel(move |r| early.send(format!("early {}", r.reason)).unwrap());
        assert!(token.wait_timeout(Duration::from_millis(1)).is_none());
        token.request("timeout", Some(10));
        token.request("requested", None);
        token.on_cancel(move |r| tx.send(format!("late {}", r.reason)).unwrap());
        let mut got: Vec<String> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, ["early timeout", "late timeout"]);
        assert_eq!(token.get().unwrap().deadline_ms, Some(10));
    }
}
