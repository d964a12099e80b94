//! What job code sees of its job (WRAP-1).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::cancel::{CancelRequest, CancelToken};
use crate::error::Error;
use crate::json::{self, Fields};
use crate::link::Link;
use crate::payload::Payload;
use crate::session::{Kind, Msg, ProgressParts, Session, Settled};

/// The level of a log message (MSG-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl Level {
    /// All four, from the least to the most severe.
    pub const ALL: [Level; 4] = [Level::Debug, Level::Info, Level::Warn, Level::Error];

    /// The level's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = Error;

    fn from_str(s: &str) -> Result<Level, Error> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "level {s:?} is not debug, info, warn or error (MSG-6)"
                ))
            })
    }
}

/// One attempt of a job, as its job code sees it (WRAP-1).
///
/// Every method is safe to call from any thread (WRAP-4), and `Job` is
/// cheap to clone for that. `progress`, `log` and `checkpoint` queue their
/// message and return at once; the link thread delivers it, over as many
/// connections as it takes. Only while connected with a full buffer does a
/// call wait (back-pressure, REPLAY-6).
#[derive(Clone)]
pub struct Job(Arc<Inner>);

struct Inner {
    session: Arc<Session>,
    cancel: CancelToken,
    /// The last checkpoint: the previous attempt's, then this one's own.
    checkpoint: Mutex<Option<Value>>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("attempt", &self.attempt())
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Starts the job of `payload`: queues `started` and starts the link
    /// thread, which connects in the background. [`crate::run`] does this
    /// and more; use it unless you need the parts.
    pub(crate) fn start(payload: Payload, cancel: CancelToken) -> Job {
        let checkpoint = payload.checkpoint.clone();
        let session = Arc::new(Session::new(payload));
        Link::spawn(Arc::clone(&session), cancel.clone());
        Job(Arc::new(Inner {
            session,
            cancel,
            checkpoint: Mutex::new(checkpoint),
        }))
    }

    pub(crate) fn session(&self) -> &Session {
        &self.0.session
    }

    fn payload(&self) -> &Payload {
        &self.0.session.payload
    }

    /// The job's id (PAY-2).
    pub fn id(&self) -> &str {
        &self.payload().job_id
    }

    /// The job definition's name (PAY-2).
    pub fn name(&self) -> &str {
        &self.payload().name
    }

    /// This attempt's number, 1 for the first (CKPT-3).
    pub fn attempt(&self) -> u64 {
        self.payload().attempt
    }

    /// The attempts allowed in all, when the server said (CKPT-3).
    pub fn max_attempts(&self) -> Option<u64> {
        self.payload().max_attempts
    }

    /// The job's input, any JSON value (PAY-2).
    pub fn data(&self) -> &Value {
        &self.payload().data
    }

    /// The job's input as a `T`, through `serde::Deserialize`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(self.data()).map_err(|e| Error::Data(e.to_string()))
    }

    /// The extensions in use with this server: offered and implemented
    /// (NEG-2). Empty with a v1 server.
    pub fn features(&self) -> Vec<&'static str> {
        self.0.session.features.names()
    }

    /// The last checkpoint: this attempt's latest, or else the one an
    /// earlier attempt left (CKPT-2); `None` when there is none.
    pub fn last_checkpoint(&self) -> Option<Value> {
        self.0
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reports `percent` (0 to 100) done with a message (MSG-4).
    pub fn progress(&self, percent: f64, message: impl AsRef<str>) -> Result<(), Error> {
        self.send_progress(percent, Some(message.as_ref()), None)
    }

    /// Reports progress with an optional message (`None`: the previous one
    /// still stands, MSG-4) and data, which must serialize to a JSON object
    /// (or to `null` for none, such as `&()`).
    pub fn progress_data(
        &self,
        percent: f64,
        message: Option<&str>,
        data: &(impl Serialize + ?Sized),
    ) -> Result<(), Error> {
        let data = object(data)?;
        self.send_progress(percent, message, data)
    }

    fn send_progress(
        &self,
        percent: f64,
        message: Option<&str>,
        data: Option<String>,
    ) -> Result<(), Error> {
        // Also refuses NaN.
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::InvalidArgument(format!(
                "percent {percent} is not between 0 and 100 (MSG-4)"
            )));
        }
        let parts = ProgressParts {
            percent: json::number(percent),
            message: message.map(json::quote),
            data,
        };
        self.0.session.enqueue(Msg::progress(parts))
    }

    /// Logs `message` at `level` (MSG-6).
    pub fn log(&self, level: Level, message: impl AsRef<str>) -> Result<(), Error> {
        self.send_log(level, message.as_ref(), None)
    }

    /// Logs `message` at `level` with data, which must serialize to a JSON
    /// object (MSG-6).
    pub fn log_data(
        &self,
        level: Level,
        message: impl AsRef<str>,
        data: &(impl Serialize + ?Sized),
    ) -> Result<(), Error> {
        let data = object(data)?;
        self.send_log(level, message.as_ref(), data)
    }

    fn send_log(&self, level: Level, message: &str, data: Option<String>) -> Result<(), Error> {
        let mut f = Fields::default()
            .raw("level", &format!("\"{}\"", level.as_str()))
            .string("message", message);
        if let Some(d) = &data {
            f = f.raw("data", d);
        }
        self.0.session.enqueue(Msg::new(Kind::Log, f.0))
    }

    /// Logs at level `debug`.
    pub fn debug(&self, message: impl AsRef<str>) -> Result<(), Error> {
        self.log(Level::Debug, message)
    }

    /// Logs at level `info`.
    pub fn info(&self, message: impl AsRef<str>) -> Result<(), Error> {
        self.log(Level::Info, message)
    }

    /// Logs at level `warn`.
    pub fn warn(&self, message: impl AsRef<str>) -> Result<(), Error> {
        self.log(Level::Warn, message)
    }

    /// Logs at level `error`.
    pub fn error(&self, message: impl AsRef<str>) -> Result<(), Error> {
        self.log(Level::Error, message)
    }

    /// Saves `data`, any JSON value, as the job's checkpoint (CKPT-1); a
    /// later attempt finds it in [`Job::last_checkpoint`] (CKPT-2). Returns
    /// whether the server keeps it: without the `checkpoint` extension it is
    /// only kept for this attempt.
    pub fn checkpoint(&self, data: &(impl Serialize + ?Sized)) -> Result<bool, Error> {
        let value = serde_json::to_value(data).map_err(|e| Error::Encode(e.to_string()))?;
        let sent = self.0.session.features.checkpoint;
        if sent {
            let body = Fields::default().raw("data", &json::encode(&value)?).0;
            self.0.session.enqueue(Msg::new(Kind::Checkpoint, body))?;
        }
        *self.0.checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(sent)
    }

    /// Ends the job with `result`, any JSON value (MSG-7). A result that
    /// cannot be encoded, or that is too large for one line (LIMIT-1), fails
    /// the job instead, and this returns why. [`crate::run`] calls it with
    /// the handler's value; job code may call it itself (then what the
    /// handler returns is ignored).
    pub fn complete(&self, result: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        let encoded = match json::encode(result) {
            Ok(e) => e,
            Err(e) => {
                self.fail_with(
                    &format!("result cannot be encoded as JSON: {e}"),
                    None,
                    false,
                )?;
                return Err(e);
            }
        };
        let body = Fields::default().raw("result", &encoded).0;
        match self.0.session.enqueue(Msg::new(Kind::Completed, body)) {
            Err(Error::TooLarge { size, .. }) => {
                self.fail_with(&format!("result too large: {size} bytes"), None, false)?;
                Err(Error::TooLarge {
                    kind: "completed",
                    size,
                    limit: self.payload().max_line_bytes as usize,
                })
            }
            other => other,
        }
    }

    /// Ends the job as failed with `error`'s text (MSG-8).
    pub fn fail(&self, error: impl fmt::Display) -> Result<(), Error> {
        self.fail_with(&error.to_string(), None, true)
    }

    /// Ends the job as failed with `error`, an optional `stack`, and whether
    /// another attempt may help (`retryable: false` asks the server not to
    /// retry, CKPT-4). A message too long for one line loses its stack, then
    /// the end of its text (LIMIT-1).
    pub fn fail_with(
        &self,
        error: &str,
        stack: Option<&str>,
        retryable: bool,
    ) -> Result<(), Error> {
        let error = if error.is_empty() { "failed" } else { error };
        let body = |error: &str, stack: Option<&str>| {
            let mut f = Fields::default().string("error", error);
            if let Some(s) = stack {
                f = f.string("stack", s);
            }
            if !retryable {
                f = f.raw("retryable", "false");
            }
            Msg::new(Kind::Failed, f.0)
        };
        match self.0.session.enqueue(body(error, stack)) {
            Err(Error::TooLarge { .. }) => {
                let keep = (self.payload().max_line_bytes as usize / 8).max(1024);
                let mut cut = keep.min(error.len());
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                let text = format!("{}... ({} bytes in all)", &error[..cut], error.len());
                self.0.session.enqueue(body(&text, None))
            }
            other => other,
        }
    }

    /// Whether the terminal message was sent (`complete` or `fail` called).
    pub fn finished(&self) -> bool {
        self.0.session.terminal().is_some()
    }

    pub(crate) fn completed(&self) -> bool {
        self.0.session.terminal() == Some(Kind::Completed)
    }

    /// Whether a cancel was requested by the server or by SIGTERM
    /// (CANCEL-3). The job code decides how to stop.
    pub fn cancelled(&self) -> bool {
        self.0.cancel.is_cancelled()
    }

    /// The cancel request, once there is one.
    pub fn cancel_request(&self) -> Option<CancelRequest> {
        self.0.cancel.get()
    }

    /// The job's cancel token: poll it, wait on it, or register a callback
    /// (CANCEL-3); it can go to other threads.
    pub fn cancel_token(&self) -> CancelToken {
        self.0.cancel.clone()
    }

    /// Blocks until the server has the terminal message: acknowledged
    /// (REPLAY-3), written to a server without replay, or spooled (SPOOL-2);
    /// or until the server stayed away for `reconnectWindowMs` (RECONNECT-3).
    /// Call it after `complete` or `fail`.
    pub fn wait(&self) -> Delivery {
        match self.0.session.wait_settled() {
            Settled::Delivered => Delivery::Delivered,
            Settled::Spooled => Delivery::Spooled,
            Settled::Lost(why) | Settled::NeverConnected(why) => Delivery::Lost(why),
        }
    }

    /// The exit status this process should end with (EXIT-2): 0 after
    /// `completed`, 1 after `failed` or without a terminal message.
    pub fn exit_code(&self) -> i32 {
        if self.completed() {
            0
        } else {
            1
        }
    }

    #[cfg(test)]
    pub(crate) fn wait_settled(&self) -> Settled {
        self.0.session.wait_settled()
    }
}

/// What became of the terminal message ([`Job::wait`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The server has it: acknowledged, or written to a server without
    /// replay (which never acknowledges, NEG-3).
    Delivered,
    /// The server stayed away; the result is in the spool file (SPOOL-2).
    Spooled,
    /// The server stayed away and there was no spool file (or it could not
    /// be written): why.
    Lost(String),
}

/// The data of progress and log: a JSON object, or nothing for `null`.
fn object(data: &(impl Serialize + ?Sized)) -> Result<Option<String>, Error> {
    let encoded = json::encode(data)?;
    match encoded.as_bytes().first() {
        Some(b'{') => Ok(Some(encoded)),
        _ if encoded == "null" => Ok(None),
        _ => Err(Error::InvalidArgument(format!(
            "data must serialize to a JSON object, not {:.40}",
            encoded
        ))),
    }
}
