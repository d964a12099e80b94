//! The link: one thread that owns the connection. It connects (and
//! reconnects on the schedule of RECONNECT-1), says hello and waits for
//! welcome (AUTH-2), writes the outbox and the heartbeats (HB-2) whatever
//! the job code is doing, and gives up or spools once the job code has ended
//! and the server stays away (RECONNECT-3, SPOOL-2). A second thread per
//! connection reads what the server writes (acks, cancel), so that the
//! server never stalls on this worker (CTRL-6).

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::json::Fields;
use crate::payload::Address;
use crate::server::{self, LineReader, ServerMessage, MAX_SERVER_LINE};
use crate::session::{millis, Kind, Session, Settled, Written};
use crate::spool;
use crate::sys::note;

/// How long a failed connection is still read, for the acks in flight.
const DRAIN_WAIT: Duration = Duration::from_millis(200);
/// How many bytes of queued lines one write carries at most.
const BATCH_BYTES: usize = 256 * 1024;

/// A connection to the server: a Unix or a TCP stream (TRANS-1).
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Reader = LineReader<BufReader<Conn>>;

/// How serving a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Settled,
    Lost,
    /// REPLAY-3: the terminal message was not acknowledged in time.
    AckTimeout,
}

/// The reconnect waits (RECONNECT-1): 100 ms doubling to 2 s, plus 0-20 %.
struct Backoff {
    wait: Duration,
    seed: u64,
}

impl Backoff {
    fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        Backoff {
            wait: Duration::ZERO,
            seed: seed | 1,
        }
    }

    fn next(&mut self) -> Duration {
        self.wait = if self.wait.is_zero() {
            Duration::from_millis(100)
        } else {
            (self.wait * 2).min(Duration::from_secs(2))
        };
        // xorshift: jitter needs no cryptography, only spread.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = (self.seed % 1000) as f64 / 1000.0 * 0.2;
        self.wait.mul_f64(1.0 + jitter)
    }

    fn reset(&mut self) {
        self.wait = Duration::ZERO;
    }
}

pub(crate) struct Link {
    session: Arc<Session>,
    cancel: CancelToken,
    address: Address,
    window: Duration,
    /// REPLAY-3 and AUTH-2; also bounds a dial.
    ack_wait: Duration,
    /// Bounds a write to a server that stopped reading.
    io_wait: Duration,
    last_heartbeat: Instant,
}

impl Link {
    /// Starts the link thread of `session`.
    pub(crate) fn spawn(session: Arc<Session>, cancel: CancelToken) {
        let p = &session.payload;
        let interval = session.lock().heartbeat_interval;
        let ack_wait = interval.max(Duration::from_secs(2));
        let timeout = millis(p.heartbeat_timeout_ms.unwrap_or(0));
        let link = Link {
            address: Address::of(&p.socket_path),
            window: millis(p.reconnect_window_ms),
            ack_wait,
            io_wait: ack_wait.max(timeout).max(Duration::from_secs(30)),
            last_heartbeat: Instant::now(),
            session,
            cancel,
        };
        let spawned = thread::Builder::new()
            .name("extjob-link".into())
            .spawn(move || {
                let session = Arc::clone(&link.session);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let mut link = link;
                    link.run();
                }));
                if outcome.is_err() {
                    let mut st = session.lock();
                    session.settle(&mut st, Settled::Lost("the link thread panicked".into()));
                }
            });
        if let Err(e) = spawned {
            note(&format!("cannot start the link thread: {e}"));
        }
    }

    fn run(&mut self) {
        let mut backoff = Backoff::new();
        let mut window_start = Instant::now();
        let mut tries = 0u32; // since window_start
        let mut next_try = Instant::now();
        let mut last_end = End::Lost;
        loop {
            if !self.pause(next_try, window_start, tries) {
                self.give_up();
                return;
            }
            tries += 1;
            if let Some((conn, reader)) = self.connect() {
                backoff.reset();
                let end = self.serve(conn, reader);
                match end {
                    End::Settled => return,
                    // A server that welcomes but never acknowledges must not
                    // keep the worker forever (REPLAY-3, RECONNECT-3).
                    End::AckTimeout if last_end == End::AckTimeout => {}
                    _ => {
                        window_start = Instant::now();
                        tries = 0;
                    }
                }
                last_end = end;
            }
            {
                let mut st = self.session.lock();
                st.down = true;
                self.session.notify_job(); // a blocked enqueue may now drop logs
            }
            next_try = Instant::now() + backoff.next();
        }
    }

    /// Waits until `next_try`; returns false instead when the link may give
    /// up (the job code has ended, or it never started) and the window since
    /// `window_start` has passed (RECONNECT-3, RECONNECT-6).
    fn pause(&self, next_try: Instant, window_start: Instant, tries: u32) -> bool {
        let give_up_at = window_start + self.window;
        let mut st = self.session.lock();
        loop {
            if st.settled.is_some() {
                return true; // connect() and serve() see it at once
            }
            let now = Instant::now();
            let may_give_up = st.terminal.is_some() || !st.started_written;
            if may_give_up && tries > 0 && now >= give_up_at {
                return false;
            }
            if now >= next_try {
                return true;
            }
            let until = if may_give_up && tries > 0 {
                next_try.min(give_up_at)
            } else {
                next_try
            };
            st = self.session.wait_link(st, Some(until - now));
        }
    }

    fn dial(&self) -> io::Result<Conn> {
        match &self.address {
            Address::Unix(path) => Ok(Conn::Unix(UnixStream::connect(path)?)),
            Address::Tcp { .. } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in self.address.resolve() {
                    match TcpStream::connect_timeout(&addr, self.ack_wait) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Dials and, for an extended worker, presents the token and waits for
    /// welcome (AUTH-2).
    fn connect(&self) -> Option<(Conn, Reader)> {
        let mut conn = self.dial().ok()?;
        conn.set_write_timeout(Some(self.io_wait)).ok()?;
        let mut reader = LineReader::new(BufReader::new(conn.try_clone().ok()?), MAX_SERVER_LINE);
        let features = &self.session.features;
        if !features.auth {
            self.session.resume(None);
            return Some((conn, reader));
        }
        let hello = self.hello();
        conn.write_all(&hello).ok()?;
        let deadline = Instant::now() + self.ack_wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            reader
                .get_ref()
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let line = reader.next_line().ok()??;
            let Ok((job_id, message)) = server::parse(line) else {
                continue; // CTRL-6
            };
            if job_id != self.session.payload.job_id {
                continue;
            }
            match message {
                ServerMessage::Welcome {
                    features,
                    last_seq,
                    heartbeat_interval_ms,
                } => {
                    reader.get_ref().get_ref().set_read_timeout(None).ok()?;
                    self.session
                        .resume(Some((&features, last_seq, heartbeat_interval_ms)));
                    return Some((conn, reader));
                }
                ServerMessage::Error { code, message } if code == "auth" => {
                    note(&format!("the server refused the token (AUTH-4): {message}"));
                    return None;
                }
                _ => {}
            }
        }
    }

    /// The first line of every connection and of the spool file (AUTH-2).
    fn hello(&self) -> Vec<u8> {
        let features = format!(
            "[{}]",
            self.session
                .features
                .names()
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let token = self.session.payload.token.as_deref().unwrap_or("");
        let body = Fields::default()
            .string("token", token)
            .raw("protocolVersion", "1")
            .raw("features", &features)
            .raw("pid", &std::process::id().to_string())
            .0;
        let mut st = self.session.lock();
        self.session.unkept_line(&mut st, "hello", &body)
    }

    /// Writes the outbox and the heartbeats until the connection fails or
    /// the terminal message is settled.
    fn serve(&mut self, mut conn: Conn, reader: Reader) -> End {
        let number = {
            let mut st = self.session.lock();
            st.reader_alive = true;
            st.lost_connection.wrapping_add(1)
        };
        let reading = {
            let session = Arc::clone(&self.session);
            let cancel = self.cancel.clone();
            thread::Builder::new()
                .name("extjob-read".into())
                .spawn(move || read(&session, reader, number, &cancel))
        };
        let Ok(reading) = reading else {
            conn.shutdown();
            return End::Lost;
        };
        let mut batch = Vec::with_capacity(BATCH_BYTES + 4096);
        let mut ack_deadline: Option<Instant> = None;
        // What a new connection begins with (a v1 started, replays) goes
        // before any heartbeat (LIFE-3, REPLAY-4).
        let mut fresh = true;
        let end = loop {
            let mut st = self.session.lock();
            if st.settled.is_some() {
                break End::Settled;
            }
            if st.lost_connection == number {
                break End::Lost;
            }
            let now = Instant::now();
            let beating = st.started_written && !st.terminal_written;
            let next_beat = self.last_heartbeat + st.heartbeat_interval;
            let unsent = st.sent < st.buf.len();
            if beating && now >= next_beat && !(fresh && unsent) {
                // Due even while the queue is long (HB-2).
                let line = self.session.unkept_line(&mut st, "heartbeat", "");
                drop(st);
                if conn.write_all(&line).is_err() {
                    break End::Lost;
                }
                self.last_heartbeat = now;
                continue;
            }
            if unsent {
                fresh = false;
                let start = st.sent;
                let mut count = 0;
                let mut carried = Written::default();
                batch.clear();
                while start + count < st.buf.len() && (count == 0 || batch.len() < BATCH_BYTES) {
                    let kind = st.buf[start + count].kind;
                    carried.started |= kind == Kind::Started;
                    carried.terminal |= kind.terminal();
                    self.session
                        .push_wire_line(&mut st, start + count, &mut batch);
                    count += 1;
                }
                let acks = st.acks;
                if acks {
                    // Counted as written before it is: its ack may come
                    // back before write_all returns.
                    for m in st.buf.range_mut(start..start + count) {
                        m.written = true;
                    }
                    st.sent += count;
                }
                drop(st);
                if conn.write_all(&batch).is_err() {
                    break End::Lost;
                }
                let mut st = self.session.lock();
                let w = self.session.written(&mut st, count, carried);
                if w.first_started {
                    self.last_heartbeat = Instant::now(); // HB-2 counts from started
                }
                if w.terminal && acks && ack_deadline.is_none() {
                    ack_deadline = Some(Instant::now() + self.ack_wait);
                }
                continue;
            }
            if ack_deadline.is_some_and(|d| now >= d) {
                break End::AckTimeout;
            }
            let mut wait = ack_deadline.map(|d| d - now);
            if beating {
                let to_beat = next_beat - now;
                wait = Some(wait.map_or(to_beat, |w| w.min(to_beat)));
            }
            drop(self.session.wait_link(st, wait));
        };
        if end != End::Settled {
            // Take in what the server sent before the connection failed
            // (acks above all), so that it is not replayed or spooled.
            let until = Instant::now() + DRAIN_WAIT;
            let mut st = self.session.lock();
            while st.reader_alive && end == End::Lost {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                st = self.session.wait_link(st, Some(left));
            }
        }
        conn.shutdown();
        let _ = reading.join();
        let mut st = self.session.lock();
        st.acks = false;
        st.lost_connection = number;
        end
    }

    /// Ends the attempt when the server stayed away: with spool, the hello
    /// and every unacknowledged message go to the spool file (SPOOL-2).
    fn give_up(&self) {
        let hello = self.session.features.spool.then(|| self.hello());
        let mut st = self.session.lock();
        let p = &self.session.payload;
        if !st.started_written && st.terminal.is_none() {
            let why = format!(
                "cannot connect to {} within {} ms (RECONNECT-6)",
                p.socket_path, p.reconnect_window_ms
            );
            self.session.settle(&mut st, Settled::NeverConnected(why));
            return;
        }
        let (Some(hello), Some(path)) = (hello, p.spool_path.as_deref()) else {
            let why = format!(
                "the server stayed away for {} ms; the result is lost (RECONNECT-3)",
                p.reconnect_window_ms
            );
            self.session.settle(&mut st, Settled::Lost(why));
            return;
        };
        let mut content = hello;
        for i in 0..st.buf.len() {
            self.session.push_wire_line(&mut st, i, &mut content);
        }
        let how = match spool::write_atomic(path, &content) {
            Ok(()) => Settled::Spooled,
            Err(e) => Settled::Lost(format!("cannot write the spool file {path}: {e}")),
        };
        self.session.settle(&mut st, how);
    }
}

/// Reads what the server writes until the connection ends; acks and
/// cancel go to the session and the job, the rest is ignored (CTRL-6).
fn read(session: &Session, mut reader: Reader, number: u64, cancel: &CancelToken) {
    let extended = session.features.auth;
    while let Ok(Some(line)) = reader.next_line() {
        if !extended {
            continue; // a v1 server writes nothing we use (NEG-3)
        }
        let Ok((job_id, message)) = server::parse(line) else {
            continue;
        };
        if job_id != session.payload.job_id {
            continue;
        }
        match message {
            ServerMessage::Ack { seq } => session.ack(seq),
            ServerMessage::Cancel {
                reason,
                deadline_ms,
            } if session.features.control => cancel.request(reason, Some(deadline_ms)),
            ServerMessage::Error { code, message } => {
                note(&format!("server error {code}: {message}"));
                if code == "auth" {
                    break; // AUTH-4: the server closes the connection
                }
            }
            _ => {}
        }
    }
    let mut st = session.lock();
    st.reader_alive = false;
    if st.lost_connection < number {
        st.lost_connection = number;
    }
    session.link_cv.notify_all();
}
