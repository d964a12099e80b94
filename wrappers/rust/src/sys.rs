//! The few process-level things std does not offer: SIGTERM as a cancel
//! request, SIGPIPE ignored, descriptors 0-2 kept open, and diagnostics on
//! standard error that never fail the worker (WRAP-5). These are the C
//! library's own functions, which std links anyway.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::raw::c_int;
use std::os::unix::io::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;

use crate::cancel::CancelToken;

const SIGPIPE: c_int = 13;
const SIGTERM: c_int = 15;
const SIG_IGN: usize = 1;
const F_GETFD: c_int = 1;

extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn write(fd: c_int, buf: *const u8, count: usize) -> isize;
}

/// One diagnostic line on standard error; a closed or broken standard error
/// is not the job's problem (WRAP-5: `eprintln!` would panic on it).
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "extjob-worker: {text}");
}

/// Ignores SIGPIPE (a write to a closed socket or pipe is an error to
/// handle, RECONNECT-2) and opens /dev/null on closed descriptors 0-2, so that
/// no socket of ours lands there, where job code printing to a closed
/// standard output would write into the protocol (WRAP-5). A Rust `main`
/// gets both from std's runtime already; this covers a worker whose `main`
/// is not Rust's (the crate inside a C program, say).
pub(crate) fn prepare_process() {
    // SAFETY: plain libc calls on small integers; no memory is shared.
    unsafe {
        signal(SIGPIPE, SIG_IGN);
        for fd in 0..3 {
            if fcntl(fd, F_GETFD) != -1 {
                continue;
            }
            let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") else {
                return;
            };
            let null = null.into_raw_fd();
            if null != fd {
                dup2(null, fd);
                close(null);
            }
        }
    }
}

static SIGTERM_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_: c_int) {
    let fd = SIGTERM_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe {
            write(fd, b"T".as_ptr(), 1);
        }
    }
}

/// Turns SIGTERM into a cancel request on `token` (CANCEL-3): the handler
/// only writes a byte to a socket pair; a thread of its own does the rest.
pub(crate) fn cancel_on_sigterm(token: CancelToken) {
    let Ok((mut receiver, sender)) = UnixStream::pair() else {
        return;
    };
    if sender.set_nonblocking(true).is_err() {
        return;
    }
    let spawned = thread::Builder::new()
        .name("extjob-sigterm".into())
        .spawn(move || {
            let mut byte = [0u8; 16];
            loop {
                match receiver.read(&mut byte) {
                    Ok(0) => return,
                    Ok(_) => token.request("sigterm", None),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
    if spawned.is_err() {
        return;
    }
    SIGTERM_PIPE.store(sender.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(sender); // the handler writes to it for the life of the process
                              // SAFETY: on_sigterm is async-signal-safe (an atomic load and write(2)).
    unsafe {
        signal(SIGTERM, on_sigterm as extern "C" fn(c_int) as usize);
    }
}
