//! [`run`]: a worker process around a handler (WRAP-2, EXIT-2).

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::error::Error as StdError;
use std::panic::{self, AssertUnwindSafe};
use std::process;

use serde::Serialize;

use crate::cancel::CancelToken;
use crate::error::{error_stack, error_text, is_permanent, Error};
use crate::job::{Delivery, Job};
use crate::payload::Payload;
use crate::sys;

thread_local! {
    /// The message, place and backtrace of the last panic on this thread,
    /// recorded by the panic hook (the unwinding payload has only the text).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs this process's job with `handler` and exits (WRAP-2).
///
/// It reads the payload from standard input and the environment (PAY-1,
/// ENV-2), connects to the server and sends `started` (a missing or
/// malformed payload: one line on standard error and exit 2, never
/// connecting, PAY-6; a server that cannot be reached within
/// `reconnectWindowMs`: exit 1 without running the handler, RECONNECT-6).
/// Then it calls `handler` on this thread; heartbeats, acks and reconnects
/// go on in the background whatever the handler does (HB-2).
///
/// `Ok(value)` completes the job with `value`; `Err(error)` fails it with the
/// error's text and, as its stack, its `Debug` form and chain of sources
/// (an error wrapped in [`crate::Permanent`] is not retried, CKPT-4); a
/// panic fails it with its message and a backtrace. Once the server has the
/// terminal message (acknowledged, written to a v1 server, or spooled), the
/// process exits 0 after `completed` and 1 after `failed` (EXIT-2, EXIT-3).
/// SIGTERM becomes a cancel request (CANCEL-3).
///
/// ```no_run
/// use extjob_worker::Job;
///
/// fn main() {
///     extjob_worker::run(|job: &Job| -> Result<u64, Box<dyn std::error::Error>> {
///         let n: u64 = job.data_as()?;
///         job.progress(50.0, "halfway")?;
///         Ok(n * 2)
///     })
/// }
/// ```
pub fn run<F, T, E>(handler: F) -> !
where
    F: FnOnce(&Job) -> Result<T, E>,
    T: Serialize,
    E: Into<Box<dyn StdError>>,
{
    sys::prepare_process();
    let payload = match Payload::read(std::io::stdin().lock(), |name| std::env::var(name).ok()) {
        Ok(p) => p,
        Err(e) => {
            sys::note(&e.to_string());
            process::exit(2);
        }
    };
    // Caught before started can go out: a server may signal at once.
    let cancel = CancelToken::new();
    sys::cancel_on_sigterm(cancel.clone());
    let job = match start_with(payload, cancel) {
        Ok(job) => job,
        Err(e) => {
            sys::note(&e.to_string());
            process::exit(1);
        }
    };
    install_panic_hook();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler(&job)));
    let sent = if job.finished() {
        // The handler sent the terminal message itself; nothing may follow
        // (LIFE-4).
        if !matches!(outcome, Ok(Ok(_))) {
            sys::note("the handler failed after the job had already finished");
        }
        Ok(())
    } else {
        match outcome {
            Ok(Ok(value)) => job.complete(&value),
            Ok(Err(error)) => {
                let error: Box<dyn StdError> = error.into();
                job.fail_with(
                    &error_text(error.as_ref()),
                    error_stack(error.as_ref()).as_deref(),
                    !is_permanent(error.as_ref()),
                )
            }
            Err(payload) => {
                let text = format!("panic: {}", panic_text(payload.as_ref()));
                let stack = LAST_PANIC.with(|p| p.borrow_mut().take());
                job.fail_with(&text, stack.as_deref(), true)
            }
        }
    };
    if let Err(e) = sent {
        sys::note(&format!("the terminal message: {e}"));
    }
    match job.wait() {
        Delivery::Spooled => sys::note("the server stayed away; the result is spooled (SPOOL-2)"),
        Delivery::Lost(why) => sys::note(&why),
        _ => {}
    }
    process::exit(job.exit_code());
}

/// Starts the job of `payload` without taking over the process: connects,
/// presents the token when the payload offers extensions, and returns once
/// `started` is written, so that the job code runs after it (LIFE-1). From
/// then on heartbeats flow in the background (HB-2). The caller reports with
/// the [`Job`], ends it with `complete` or `fail`, waits with
/// [`Job::wait`], and exits with [`Job::exit_code`]. [`run`] does all of
/// that, and turns SIGTERM into a cancel request; use it unless the process
/// is not only this job's.
///
/// A server that cannot be reached within `reconnectWindowMs` is
/// [`Error::Unreachable`] (RECONNECT-6).
///
/// ```
/// use std::io::BufRead;
/// use std::os::unix::net::UnixListener;
/// use extjob_worker::{Delivery, Payload};
///
/// // A v1 server, as the original: it reads lines and never writes.
/// let dir = std::env::temp_dir().join(format!("extjob-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let socket = dir.join("job.sock");
/// let server = UnixListener::bind(&socket)?;
/// let reading = std::thread::spawn(move || {
///     let (conn, _) = server.accept().unwrap();
///     std::io::BufReader::new(conn).lines().map(Result::unwrap).collect::<Vec<_>>()
/// });
///
/// let line = serde_json::json!({"jobId": "j_1", "name": "double", "data": {"n": 21}, "socketPath": socket});
/// let payload = Payload::parse(line.to_string().as_bytes(), |_| None)?;
/// let job = extjob_worker::start(payload)?; // connected, started written
/// let n = job.data()["n"].as_i64().unwrap();
/// job.progress(50.0, "halfway")?;
/// job.complete(&(n * 2))?;
/// assert_eq!(job.wait(), Delivery::Delivered); // written: a v1 server sends no ack
/// assert_eq!(job.exit_code(), 0);
///
/// let lines = reading.join().unwrap(); // the worker closed the connection
/// assert!(lines[0].starts_with(r#"{"type":"started","jobId":"j_1","timestamp":"#));
/// assert!(lines[1].ends_with(r#""percent":50,"message":"halfway"}"#));
/// assert!(lines[2].starts_with(r#"{"type":"completed""#) && lines[2].ends_with(r#""result":42}"#));
/// std::fs::remove_dir_all(dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn start(payload: Payload) -> Result<Job, Error> {
    start_with(payload, CancelToken::new())
}

fn start_with(payload: Payload, cancel: CancelToken) -> Result<Job, Error> {
    let job = Job::start(payload, cancel);
    job.session().wait_started().map_err(Error::Unreachable)?;
    Ok(job)
}

fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let text = panic_text(info.payload());
        let stack = format!("panicked{place}: {text}\n{}", Backtrace::force_capture());
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(stack));
        previous(info); // the default hook ignores a broken standard error
    }));
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("a panic with a value that is not text")
    }
}
