//! A test peer: the server side of the wire, on a real Unix or TCP socket.
//! Used by the crate's unit tests (vectors) and by the integration tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Generous: the machine may be loaded. Tests wait for conditions, never
/// for time.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

pub struct Peer {
    listener: Listener,
    pub socket_path: String,
    dir: PathBuf,
}

pub trait Stream: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> Stream for T {}

/// One accepted connection.
pub struct Conn {
    reader: BufReader<Box<dyn Stream>>,
    writer: Box<dyn Stream>,
    pub job_id: String,
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn temp_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("xjr-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Peer {
    pub fn unix() -> Peer {
        let dir = temp_dir();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        Peer {
            listener: Listener::Unix(listener),
            socket_path: path.to_str().unwrap().to_owned(),
            dir,
        }
    }

    pub fn tcp() -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        Peer {
            listener: Listener::Tcp(listener),
            socket_path: format!("tcp://127.0.0.1:{port}"),
            dir: temp_dir(),
        }
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Closes the listener (a server gone away); `reopen` listens again at
    /// the same place (a restart).
    pub fn close(&mut self) {
        if let Listener::Unix(_) = self.listener {
            let _ = std::fs::remove_file(&self.socket_path);
        }
        let stand_in = UnixListener::bind(self.dir.join(format!(
            "x{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )))
        .unwrap();
        self.listener = Listener::Unix(stand_in);
    }

    pub fn reopen(&mut self) {
        let listener = UnixListener::bind(&self.socket_path).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.listener = Listener::Unix(listener);
    }

    pub fn try_accept(&self, within: Duration) -> Option<Conn> {
        let until = Instant::now() + within;
        loop {
            let accepted: Option<(Box<dyn Stream>, Box<dyn Stream>)> = match &self.listener {
                Listener::Unix(l) => l.accept().ok().map(|(s, _)| {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(DEADLINE)).unwrap();
                    let w = s.try_clone().unwrap();
                    (
                        Box::new(s) as Box<dyn Stream>,
                        Box::new(w) as Box<dyn Stream>,
                    )
                }),
                Listener::Tcp(l) => l.accept().ok().map(|(s, _)| {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(DEADLINE)).unwrap();
                    let w = s.try_clone().unwrap();
                    (
                        Box::new(s) as Box<dyn Stream>,
                        Box::new(w) as Box<dyn Stream>,
                    )
                }),
            };
            if let Some((r, w)) = accepted {
                return Some(Conn {
                    reader: BufReader::with_capacity(1 << 20, r),
                    writer: w,
                    job_id: String::new(),
                });
            }
            if Instant::now() >= until {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn accept(&self) -> Conn {
        self.try_accept(DEADLINE).expect("the worker connects")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Conn {
    /// The next raw line without its newline; `None` at end of file.
    pub fn line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                assert_eq!(
                    line.pop(),
                    Some(b'\n'),
                    "a line ends with a newline (FRAME-1)"
                );
                Some(line)
            }
        }
    }

    /// The next message that is not a heartbeat, as raw bytes and value.
    pub fn next_raw(&mut self) -> Option<(Vec<u8>, Value)> {
        loop {
            let line = self.line()?;
            let value: Value = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&line)));
            if value["type"] != "heartbeat" {
                return Some((line, value));
            }
        }
    }

    pub fn next(&mut self) -> Value {
        self.next_raw().expect("a message").1
    }

    /// Every message up to and including the terminal one.
    pub fn until_terminal(&mut self) -> Vec<Value> {
        let mut got = Vec::new();
        while let Some((_, m)) = self.next_raw() {
            let done = m["type"] == "completed" || m["type"] == "failed";
            got.push(m);
            if done {
                break;
            }
        }
        got
    }

    pub fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        let _ = self.writer.write_all(&line);
    }

    /// Reads hello, answers welcome (AUTH-2, CTRL-2).
    pub fn handshake(&mut self, last_seq: u64, interval_ms: u64) -> Value {
        let hello = self.next();
        assert_eq!(hello["type"], "hello", "{hello}");
        self.job_id = hello["jobId"].as_str().unwrap().to_owned();
        let features = hello["features"].clone();
        self.send(
            &json!({"type": "welcome", "jobId": self.job_id, "timestamp": 1,
            "protocolVersion": 1, "features": features, "lastSeq": last_seq,
            "heartbeatIntervalMs": interval_ms}),
        );
        hello
    }

    pub fn ack(&mut self, seq: &Value) {
        let job_id = self.job_id.clone();
        self.send(&json!({"type": "ack", "jobId": job_id, "timestamp": 1, "seq": seq}));
    }
}

pub fn v1_payload(socket_path: &str, data: Value) -> Value {
    json!({"jobId": "j_1", "name": "rust-test", "data": data, "socketPath": socket_path,
           "heartbeatIntervalMs": 200})
}

pub fn extended_payload(socket_path: &str, data: Value, spool: Option<&str>) -> Value {
    let mut p = json!({"jobId": "j_1", "name": "rust-test", "data": data, "socketPath": socket_path,
        "protocolVersion": 1, "features": ["auth", "replay", "control", "spool", "checkpoint"],
        "heartbeatIntervalMs": 200, "heartbeatTimeoutMs": 600, "reconnectWindowMs": 1000,
        "token": "tok-0123456789abcdef", "attempt": 1, "maxAttempts": 2});
    if let Some(s) = spool {
        p["spoolPath"] = json!(s);
    }
    p
}
