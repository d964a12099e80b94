//! One attempt's outbox: the messages on their way to the server, shared by
//! the job code (which queues them) and the link thread (which writes them).
//!
//! With `replay` every message keeps its `seq`, timestamp and line from the
//! moment it is queued until the server acknowledges it (REPLAY-3, REPLAY-4);
//! without it a message is stamped when it is written (TIME-1) and forgotten
//! once written.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::json::{self, Fields};
use crate::payload::{Payload, V1_HEARTBEAT_INTERVAL_MS};

/// Messages held at most while disconnected, and their bytes (REPLAY-6: at
/// least 10,000 messages or 16 MiB).
pub(crate) const BUFFER_MAX_MESSAGES: usize = 10_000;
pub(crate) const BUFFER_MAX_BYTES: usize = 64 << 20;

/// The longest wait this crate schedules: a server's millisecond figures
/// beyond it (a year) mean "never" and are cut to it, so that no deadline
/// overflows a clock with a narrower range than Linux's 64-bit one.
const MAX_WAIT_MS: u64 = 365 * 24 * 3600 * 1000;

/// `ms` from the server as a wait, cut to [`MAX_WAIT_MS`].
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.min(MAX_WAIT_MS))
}

/// The message types a worker sends (MSG-3..MSG-9), but hello and heartbeat,
/// which the link writes itself and never keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Started,
    Progress,
    Log,
    Checkpoint,
    Completed,
    Failed,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::Progress => "progress",
            Kind::Log => "log",
            Kind::Checkpoint => "checkpoint",
            Kind::Completed => "completed",
            Kind::Failed => "failed",
        }
    }

    pub(crate) fn terminal(self) -> bool {
        matches!(self, Kind::Completed | Kind::Failed)
    }
}

/// The parts of a progress message, kept so that coalescing can carry an
/// earlier message over (MSG-4: a missing message means the previous stands).
#[derive(Debug, Clone)]
pub(crate) struct ProgressParts {
    pub(crate) percent: String,
    pub(crate) message: Option<String>,
    pub(crate) data: Option<String>,
}

impl ProgressParts {
    pub(crate) fn body(&self) -> String {
        let mut f = Fields::default().raw("percent", &self.percent);
        if let Some(m) = &self.message {
            f = f.raw("message", m);
        }
        if let Some(d) = &self.data {
            f = f.raw("data", d);
        }
        f.0
    }
}

/// A message on its way to the server.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) kind: Kind,
    pub(crate) body: String,
    pub(crate) seq: u64,
    /// The whole line of a sequenced message; empty when unsequenced.
    pub(crate) line: Vec<u8>,
    pub(crate) written: bool,
    pub(crate) progress: Option<ProgressParts>,
    /// The warn log that counts the logs dropped in an outage (REPLAY-6).
    pub(crate) notice: bool,
}

impl Msg {
    pub(crate) fn new(kind: Kind, body: String) -> Msg {
        Msg {
            kind,
            body,
            seq: 0,
            line: Vec::new(),
            written: false,
            progress: None,
            notice: false,
        }
    }

    pub(crate) fn progress(parts: ProgressParts) -> Msg {
        let mut m = Msg::new(Kind::Progress, parts.body());
        m.progress = Some(parts);
        m
    }

    fn size(&self) -> usize {
        self.body.len() + self.line.len()
    }
}

/// How the terminal message ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Acknowledged (REPLAY-3), or written to a server without replay.
    Delivered,
    /// Written to the spool file (SPOOL-2).
    Spooled,
    /// The server stayed away and there was no spool (RECONNECT-3).
    Lost(String),
    /// The first connection was never made (RECONNECT-6).
    NeverConnected(String),
}

/// The extensions in use: offered by the payload and implemented here
/// (NEG-2). All false is a v1 worker (NEG-3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Features {
    pub(crate) auth: bool,
    pub(crate) replay: bool,
    pub(crate) control: bool,
    pub(crate) spool: bool,
    pub(crate) checkpoint: bool,
}

impl Features {
    pub(crate) fn negotiate(p: &Payload) -> Features {
        let offered = |name: &str| p.features.iter().any(|f| f == name);
        // Every extension needs hello, and hello needs the token (NEG-2).
        if !offered("auth") || p.token.is_none() {
            return Features::default();
        }
        let replay = offered("replay");
        Features {
            auth: true,
            replay,
            control: offered("control"),
            spool: replay && offered("spool") && p.spool_path.is_some(),
            checkpoint: offered("checkpoint"),
        }
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        [
            ("auth", self.auth),
            ("replay", self.replay),
            ("control", self.control),
            ("spool", self.spool),
            ("checkpoint", self.checkpoint),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

/// What the job code and the link thread share, under one lock.
pub(crate) struct State {
    /// With acks: every unacknowledged message; otherwise every unwritten one.
    pub(crate) buf: VecDeque<Msg>,
    buf_bytes: usize,
    /// `buf[..sent]` is written on the current connection (only with acks).
    pub(crate) sent: usize,
    seq: u64,
    last_timestamp: u64,
    /// A connection failed and none is back yet (REPLAY-6).
    pub(crate) down: bool,
    /// The current connection acknowledges (REPLAY-2).
    pub(crate) acks: bool,
    pub(crate) started_written: bool,
    pub(crate) terminal: Option<Kind>,
    pub(crate) terminal_written: bool,
    pub(crate) settled: Option<Settled>,
    dropped_logs: usize,
    /// The link thread waits on `link_cv`: a queued message must wake it.
    pub(crate) link_idle: bool,
    pub(crate) heartbeat_interval: Duration,
    /// The connection whose reader saw it end, by number.
    pub(crate) lost_connection: u64,
    pub(crate) reader_alive: bool,
}

impl State {
    /// Wall-clock milliseconds that never decrease (TIME-1).
    pub(crate) fn stamp(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_timestamp = self.last_timestamp.max(now);
        self.last_timestamp
    }

    fn full(&self, max_messages: usize, max_bytes: usize) -> bool {
        !self.buf.is_empty() && (self.buf.len() >= max_messages || self.buf_bytes >= max_bytes)
    }

    pub(crate) fn remove(&mut self, i: usize) -> Option<Msg> {
        let m = self.buf.remove(i)?;
        self.buf_bytes -= m.size();
        if i < self.sent {
            self.sent -= 1;
        }
        Some(m)
    }

    fn push_back(&mut self, m: Msg) {
        self.buf_bytes += m.size();
        self.buf.push_back(m);
    }

    fn drop_oldest_log(&mut self) -> bool {
        match self
            .buf
            .iter()
            .position(|m| m.kind == Kind::Log && !m.written && !m.notice)
        {
            Some(i) => {
                self.remove(i);
                self.dropped_logs += 1;
                true
            }
            None => false,
        }
    }

    /// Removes the latest progress not yet written anywhere: `parts`
    /// supersedes it, keeping its message if it has none (REPLAY-6, MSG-4).
    fn coalesce(&mut self, parts: &mut ProgressParts) {
        let found = self
            .buf
            .iter()
            .rposition(|m| m.kind == Kind::Progress && !m.written);
        if let Some(i) = found {
            if let Some(old) = self.remove(i).and_then(|m| m.progress) {
                if parts.message.is_none() {
                    parts.message = old.message;
                }
            }
        }
    }
}

/// The outbox of one attempt.
pub(crate) struct Session {
    pub(crate) payload: Payload,
    pub(crate) features: Features,
    /// The job id as a JSON string, encoded once.
    pub(crate) job_id_json: String,
    max_line: usize,
    max_messages: usize,
    max_bytes: usize,
    state: Mutex<State>,
    /// Wakes the link thread: something to write, an ack, a lost connection.
    pub(crate) link_cv: Condvar,
    /// Wakes job code and the runner: space in the buffer, started written,
    /// the terminal message settled.
    job_cv: Condvar,
}

impl Session {
    pub(crate) fn new(payload: Payload) -> Session {
        let features = Features::negotiate(&payload);
        let interval = payload
            .heartbeat_interval_ms
            .unwrap_or(V1_HEARTBEAT_INTERVAL_MS)
            .max(10);
        let started = Msg::new(Kind::Started, String::new());
        let s = Session {
            job_id_json: json::quote(&payload.job_id),
            max_line: usize::try_from(payload.max_line_bytes).unwrap_or(usize::MAX),
            max_messages: BUFFER_MAX_MESSAGES,
            max_bytes: BUFFER_MAX_BYTES,
            features,
            payload,
            state: Mutex::new(State {
                buf: VecDeque::new(),
                buf_bytes: 0,
                sent: 0,
                seq: 0,
                last_timestamp: 0,
                down: false,
                acks: false,
                started_written: false,
                terminal: None,
                terminal_written: false,
                settled: None,
                dropped_logs: 0,
                link_idle: false,
                heartbeat_interval: millis(interval),
                lost_connection: 0,
                reader_alive: false,
            }),
            link_cv: Condvar::new(),
            job_cv: Condvar::new(),
        };
        // started is always the first message (LIFE-1); it always fits.
        let _ = s.enqueue(started);
        s
    }

    #[cfg(test)]
    pub(crate) fn with_limits(mut self, max_messages: usize, max_bytes: usize) -> Session {
        self.max_messages = max_messages;
        self.max_bytes = max_bytes;
        self
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state: every
        // mutation is a few plain assignments.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait_link<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        st.link_idle = true;
        let mut st = match timeout {
            Some(t) => {
                self.link_cv
                    .wait_timeout(st, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.link_cv.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
        st.link_idle = false;
        st
    }

    fn wait_job<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.job_cv.wait(st).unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify_job(&self) {
        self.job_cv.notify_all();
    }

    /// Queues `m`. While connected a full buffer blocks the caller
    /// (back-pressure); once a connection has failed, progress is coalesced
    /// and the oldest logs give way until one is back (REPLAY-6). A terminal
    /// message is always taken.
    pub(crate) fn enqueue(&self, mut m: Msg) -> Result<(), Error> {
        let mut st = self.lock();
        loop {
            if st.terminal.is_some() {
                return Err(Error::Finished);
            }
            if m.kind.terminal()
                || st.settled.is_some()
                || !st.full(self.max_messages, self.max_bytes)
            {
                break;
            }
            if st.down {
                if st.drop_oldest_log() {
                    self.note_dropped(&mut st);
                    continue;
                }
                break; // nothing may be dropped: hold it anyway
            }
            st = self.wait_job(st);
        }
        if let (Some(parts), true) = (m.progress.as_mut(), st.down) {
            st.coalesce(parts);
            m.body = parts.body();
        }
        self.seal(&mut st, &mut m)?;
        let kind = m.kind;
        st.push_back(m);
        if kind.terminal() {
            st.terminal = Some(kind);
        }
        if st.link_idle {
            self.link_cv.notify_one();
        }
        Ok(())
    }

    /// Keeps one warn log that says how many logs were dropped (REPLAY-6):
    /// made with the next seq when the first goes, so that it comes before
    /// whatever the job sends next (the terminal message included), and
    /// replaced by a newer count while it is unsent.
    fn note_dropped(&self, st: &mut State) {
        if let Some(i) = st.buf.iter().position(|m| m.notice && !m.written) {
            st.remove(i);
        }
        let text = format!(
            "dropped {} log messages while disconnected (REPLAY-6)",
            st.dropped_logs
        );
        let data = format!("{{\"dropped\":{}}}", st.dropped_logs);
        let body = Fields::default()
            .string("level", "warn")
            .string("message", &text)
            .raw("data", &data)
            .0;
        let mut warn = Msg::new(Kind::Log, body);
        warn.notice = true;
        if self.seal(st, &mut warn).is_ok() {
            st.push_back(warn);
        }
    }

    /// Numbers, stamps and encodes a sequenced message, and checks that its
    /// line fits (LIMIT-1).
    fn seal(&self, st: &mut State, m: &mut Msg) -> Result<(), Error> {
        let size = if self.features.replay {
            let timestamp = st.stamp();
            let mut line = Vec::with_capacity(m.body.len() + 96);
            json::push_line(
                &mut line,
                m.kind.name(),
                &self.job_id_json,
                timestamp,
                st.seq + 1,
                &m.body,
            );
            let size = line.len() - 1;
            if size <= self.max_line {
                st.seq += 1;
                m.seq = st.seq;
                m.line = line;
            }
            size
        } else {
            json::unstamped_len(m.kind.name(), &self.job_id_json, &m.body)
        };
        if size > self.max_line {
            return Err(Error::TooLarge {
                kind: m.kind.name(),
                size,
                limit: self.max_line,
            });
        }
        Ok(())
    }

    /// The line a message is written as: its own when sequenced, stamped now
    /// otherwise (TIME-1).
    pub(crate) fn push_wire_line(&self, st: &mut State, i: usize, out: &mut Vec<u8>) {
        let m = &st.buf[i];
        if !m.line.is_empty() {
            out.extend_from_slice(&m.line);
            return;
        }
        let (kind, body) = (m.kind.name(), m.body.clone());
        let timestamp = st.stamp();
        json::push_line(out, kind, &self.job_id_json, timestamp, 0, &body);
    }

    /// An unsequenced line written by the link alone (hello, heartbeat).
    pub(crate) fn unkept_line(&self, st: &mut State, kind: &str, body: &str) -> Vec<u8> {
        let timestamp = st.stamp();
        let mut line = Vec::with_capacity(body.len() + 80);
        json::push_line(&mut line, kind, &self.job_id_json, timestamp, 0, body);
        line
    }

    /// Prepares the buffer for a new connection: forgets what the welcome's
    /// `lastSeq` covers and rewinds to resend the rest (REPLAY-4); a v1
    /// worker says `started` again (LIFE-3, RECONNECT-4).
    pub(crate) fn resume(&self, welcome: Option<(&[String], u64, u64)>) {
        let mut st = self.lock();
        st.down = false;
        st.sent = 0;
        st.acks = false;
        if let Some((features, last_seq, interval_ms)) = welcome {
            st.acks = self.features.replay && features.iter().any(|f| f == "replay");
            st.heartbeat_interval = millis(interval_ms.max(10));
            let mut i = 0;
            while i < st.buf.len() {
                let m = &st.buf[i];
                if m.written && m.seq > 0 && m.seq <= last_seq {
                    let kind = m.kind;
                    st.remove(i);
                    if kind.terminal() {
                        self.settle(&mut st, Settled::Delivered);
                    }
                } else {
                    i += 1;
                }
            }
        }
        if !self.features.auth && st.started_written {
            st.buf.push_front(Msg::new(Kind::Started, String::new()));
        }
        st.dropped_logs = 0; // a later outage counts anew
        self.notify_job();
    }

    /// Forgets every written message up to `seq` (REPLAY-2: acks are
    /// cumulative).
    pub(crate) fn ack(&self, seq: u64) {
        let mut st = self.lock();
        if !st.acks {
            return;
        }
        while st.sent > 0 && st.buf.front().is_some_and(|m| m.seq <= seq) {
            if let Some(m) = st.remove(0) {
                if m.kind.terminal() {
                    self.settle(&mut st, Settled::Delivered);
                }
            }
        }
        self.notify_job();
        if st.link_idle {
            self.link_cv.notify_one();
        }
    }

    pub(crate) fn settle(&self, st: &mut State, how: Settled) {
        if st.settled.is_none() {
            st.settled = Some(how);
            self.job_cv.notify_all();
            self.link_cv.notify_all();
        }
    }

    /// Blocks until `started` is written (the job code may run), or the
    /// first connection was given up (RECONNECT-6).
    pub(crate) fn wait_started(&self) -> Result<(), String> {
        let mut st = self.lock();
        loop {
            if st.started_written {
                return Ok(());
            }
            if let Some(settled) = &st.settled {
                return Err(match settled {
                    Settled::NeverConnected(why) | Settled::Lost(why) => why.clone(),
                    other => format!("{other:?}"),
                });
            }
            st = self.wait_job(st);
        }
    }

    /// Blocks until the terminal message is settled.
    pub(crate) fn wait_settled(&self) -> Settled {
        let mut st = self.lock();
        loop {
            if let Some(s) = &st.settled {
                return s.clone();
            }
            st = self.wait_job(st);
        }
    }

    pub(crate) fn terminal(&self) -> Option<Kind> {
        self.lock().terminal
    }

    /// After the link wrote `count` messages from `buf[sent..]` carrying
    /// `w`, records what it means: without acks they are forgotten, started
    /// lets the job code run, and the terminal message is delivered (NEG-3,
    /// EXIT-3). With acks an ack may already have removed them.
    pub(crate) fn written(&self, st: &mut State, count: usize, mut w: Written) -> Written {
        if !st.acks {
            for _ in 0..count {
                st.remove(0);
            }
            if count > 0 {
                self.notify_job(); // space in the buffer
            }
        }
        if w.started && !st.started_written {
            st.started_written = true;
            w.first_started = true;
            self.notify_job();
        }
        if w.terminal {
            st.terminal_written = true;
            if !st.acks {
                self.settle(st, Settled::Delivered);
            }
        }
        w
    }
}

/// What a write carried.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    pub(crate) started: bool,
    pub(crate) first_started: bool,
    pub(crate) terminal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(extra: &str) -> Payload {
        let line = format!(r#"{{"jobId":"j","name":"n","socketPath":"/s","data":{{}}{extra}}}"#);
        Payload::parse(line.as_bytes(), |_| None).unwrap()
    }

    const EXTENDED: &str = r#","protocolVersion":1,"features":["auth","replay","control","spool","checkpoint"],"token":"tttttttttttttttt","spoolPath":"/tmp/x""#;

    fn log(text: &str) -> Msg {
        Msg::new(Kind::Log, Fields::default().string("message", text).0)
    }

    #[test]
    fn neg_2_features_in_use_are_offered_and_implemented() {
        assert_eq!(Features::negotiate(&payload("")), Features::default());
        let p = payload(
            r#","protocolVersion":1,"features":["replay","auth","future"],"token":"tttttttttttttttt""#,
        );
        assert_eq!(Features::negotiate(&p).names(), ["auth", "replay"]);
        let p = payload(
            r#","protocolVersion":1,"features":["replay","control"],"token":"tttttttttttttttt""#,
        );
        assert_eq!(Features::negotiate(&p), Features::default()); // no auth, no hello
        assert_eq!(Features::negotiate(&payload(EXTENDED)).names().len(), 5);
    }

    #[test]
    fn replay_1_sequenced_messages_are_numbered_from_1() {
        let s = Session::new(payload(EXTENDED));
        s.enqueue(log("a")).unwrap();
        let st = s.lock();
        assert_eq!(st.buf.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(st.buf[1]
            .line
            .starts_with(br#"{"type":"log","jobId":"j","timestamp":"#));
    }

    #[test]
    fn replay_6_while_down_progress_coalesces_keeping_its_message() {
        let s = Session::new(payload(EXTENDED));
        s.lock().down = true;
        let parts = |p: &str, m: Option<&str>| ProgressParts {
            percent: p.into(),
            message: m.map(json::quote),
            data: None,
        };
        s.enqueue(Msg::progress(parts("10", Some("ten")))).unwrap();
        s.enqueue(Msg::progress(parts("20", None))).unwrap();
        let st = s.lock();
        assert_eq!(st.buf.len(), 2); // started and the latest progress
        assert_eq!(st.buf[1].body, r#""percent":20,"message":"ten""#);
        assert_eq!(st.buf[1].seq, 3); // the coalesced seq 2 is a gap
    }

    #[test]
    fn replay_6_a_full_buffer_drops_the_oldest_logs_while_down_and_says_so_before_the_terminal() {
        let s = Session::new(payload(EXTENDED)).with_limits(3, 1 << 20);
        s.lock().down = true;
        for i in 0..5 {
            s.enqueue(log(&format!("l{i}"))).unwrap();
        }
        s.enqueue(Msg::new(Kind::Completed, String::new())).unwrap(); // never dropped
        let st = s.lock();
        let bodies: Vec<&str> = st.buf.iter().map(|m| m.body.as_str()).collect();
        // The warn log takes a place too; it comes before the terminal message.
        assert_eq!(bodies.len(), 4, "{bodies:?}");
        assert!(bodies[1].contains("dropped 4 log messages"), "{bodies:?}");
        assert!(bodies[1].contains(r#""data":{"dropped":4}"#), "{bodies:?}");
        assert_eq!(bodies[2], r#""message":"l4""#);
        assert_eq!(st.buf.back().unwrap().kind, Kind::Completed);
        let seqs: Vec<u64> = st.buf.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    #[test]
    fn life_4_nothing_is_queued_after_the_terminal_message() {
        let s = Session::new(payload(""));
        s.enqueue(Msg::new(Kind::Failed, r#""error":"x""#.into()))
            .unwrap();
        assert_eq!(s.enqueue(log("late")), Err(Error::Finished));
    }

    #[test]
    fn limit_1_a_line_too_long_is_refused_and_uses_no_seq() {
        let s = Session::new(payload(&format!("{EXTENDED},\"maxLineBytes\":65536")));
        let big = log(&"x".repeat(70_000));
        assert!(matches!(
            s.enqueue(big),
            Err(Error::TooLarge { kind: "log", .. })
        ));
        s.enqueue(log("small")).unwrap();
        assert_eq!(s.lock().buf.back().unwrap().seq, 2);
    }

    #[test]
    fn replay_4_welcome_last_seq_forgets_what_it_covers() {
        let s = Session::new(payload(EXTENDED));
        s.enqueue(log("a")).unwrap();
        s.enqueue(Msg::new(Kind::Completed, String::new())).unwrap();
        {
            let mut st = s.lock();
            for m in st.buf.iter_mut() {
                m.written = true;
            }
        }
        s.resume(Some((&["auth".into(), "replay".into()], 3, 100)));
        let st = s.lock();
        assert!(st.buf.is_empty());
        assert_eq!(st.settled, Some(Settled::Delivered));
    }
}
