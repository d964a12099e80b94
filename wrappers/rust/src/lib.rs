//! The worker side of the external job protocol, version 1 (`protocol/SPEC.md`
//! of the extjob repository; requirement ids such as `HB-2` or `REPLAY-4` in
//! this crate's documentation refer to it).
//!
//! A job server spawns the worker, writes a JSON payload to its standard
//! input and listens on a Unix socket or at `tcp://HOST:PORT` for
//! newline-delimited JSON messages. [`run`] reads the payload, connects,
//! sends `started`, calls your handler, and reports its result:
//!
//! ```no_run
//! use extjob_worker::{Job, Permanent};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     images: Vec<String>,
//! }
//!
//! fn main() {
//!     extjob_worker::run(|job: &Job| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
//!         let input: Input = job.data_as().map_err(Permanent::new)?; // failed, not retried
//!         for (i, name) in input.images.iter().enumerate() {
//!             if job.cancelled() {
//!                 return Err("cancelled".into()); // an error (or a panic) fails the job
//!             }
//!             job.progress(100.0 * i as f64 / input.images.len() as f64, format!("resizing {name}"))?;
//!             job.info(format!("resized {name}"))?;
//!         }
//!         Ok(serde_json::json!({ "resized": input.images.len() })) // completes it
//!     })
//! }
//! ```
//!
//! # How it works
//!
//! Job code never touches the socket. Each call builds its message and puts
//! it in an outbox; one background thread, the *link*, owns the connection:
//! it connects (retrying 100 ms, 200 ms, ... up to 2 s apart, RECONNECT-1),
//! presents the attempt's token and waits for `welcome` when the payload
//! offers extensions (AUTH-2), writes the outbox in order, heartbeats on its
//! own clock whatever the job code is doing (HB-2), and reconnects when the
//! connection fails. A reader thread per connection takes in `ack`,
//! `cancel` and `error` lines and ignores the rest (CTRL-6). So a handler
//! may block, sleep or spin for as long as it likes.
//!
//! Which extensions are used is decided by the payload alone (NEG-2): with no
//! `features` this is a plain v1 worker that never waits for the server
//! (NEG-3), so it works with the original TypeScript server too. With
//! `auth` and a token it says `hello`; with `replay` every message keeps its
//! `seq` until acknowledged and is sent again after a reconnect (REPLAY-4);
//! with `control` a server `cancel` reaches [`Job::cancelled`] and
//! [`CancelToken`] (SIGTERM too, CANCEL-3); with `spool` the result goes to
//! the spool file when the server never comes back (SPOOL-2); with
//! `checkpoint`, [`Job::checkpoint`] saves state that the next attempt finds
//! in [`Job::last_checkpoint`] (CKPT-2).
//!
//! # Threads and async code
//!
//! [`Job`] is `Clone + Send + Sync`: hand clones to threads, and every line
//! is still written whole (WRAP-4). No async runtime is needed or assumed,
//! and none is tied in (there is no `tokio` feature because none is needed):
//! async job code builds its runtime inside the handler and blocks on it,
//! and awaits the cancel request as [`CancelToken::cancelled`], a future any
//! executor drives. With tokio (not a dependency, so this is not compiled):
//!
//! ```text
//! extjob_worker::run(|job| -> Result<u64, Box<dyn std::error::Error>> {
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     runtime.block_on(async {
//!         tokio::select! {
//!             request = job.cancel_token().cancelled() => Err(request.reason.into()),
//!             n = fetch_and_count(job) => n,
//!         }
//!     })
//! })
//! ```
//!
//! # Text
//!
//! Every string is sent as valid JSON (FRAME-2, WRAP-3): quotes, backslashes
//! and every control character escaped, other characters as UTF-8, lines of
//! many megabytes in one piece (up to the server's `maxLineBytes`, LIMIT-1).
//! A Rust `String` cannot hold an unpaired surrogate, so none can be sent;
//! a payload whose strings escape one (`"\ud800"`, valid JSON syntax that
//! `serde_json` refuses) is read with U+FFFD in its place, as FRAME-2 asks
//! of a sender, instead of refusing the job.
//!
//! # Output
//!
//! The crate never prints protocol traffic; its only output is one-line
//! diagnostics on standard error, and a closed or broken standard output or
//! error never stops the worker (WRAP-5). Job code should do the same:
//! `println!` panics when standard output is a broken pipe, so use
//! `let _ = writeln!(std::io::stdout(), ...)` or better, [`Job::log`].
//!
//! A panic is reported with its message and backtrace when the crate is
//! built with unwinding (the default); with `panic = "abort"` the process
//! dies at once and the server records the signal (EXIT-1).

#![warn(missing_docs)]

mod cancel;
mod error;
mod job;
mod json;
mod link;
mod payload;
mod runner;
mod server;
mod session;
mod spool;
mod sys;

#[cfg(test)]
#[path = "../tests/common/peer.rs"]
mod peer;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod vectors;

pub use cancel::{CancelRequest, CancelToken, Cancelled};
pub use error::{Error, PayloadError, Permanent};
pub use job::{Delivery, Job, Level};
pub use payload::{
    Payload, DEFAULT_MAX_LINE_BYTES, DEFAULT_RECONNECT_WINDOW_MS, MAX_PAYLOAD_BYTES,
    V1_HEARTBEAT_INTERVAL_MS,
};
pub use runner::{run, start};

/// The extensions this crate implements (NEG-1).
pub const IMPLEMENTED_FEATURES: [&str; 5] = ["auth", "replay", "control", "spool", "checkpoint"];

/// The crate's README, compiled as a doctest so its example stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
