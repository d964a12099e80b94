//! The fixture worker as a real process against the test peer: what only a
//! whole process shows (exit status, standard streams, signals).

mod common;

use std::io::Write;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::peer::{extended_payload, v1_payload, Peer, DEADLINE};
use serde_json::{json, Value};

struct Worker {
    child: Child,
}

impl Worker {
    fn spawn(stdin: &[u8], env: &[(&str, &str)], stdout: Stdio, stderr: Stdio) -> Worker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_extjob-fixture"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr);
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
        drop(input); // PAY-1: the whole payload, then end of file
        Worker { child }
    }

    fn with_payload(payload: &Value) -> Worker {
        let line = format!("{payload}\n");
        Worker::spawn(line.as_bytes(), &[], Stdio::piped(), Stdio::piped())
    }

    fn wait(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "the worker exits");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn output(mut self) -> (ExitStatus, String, String) {
        let status = self.wait();
        let read = |r: Option<&mut dyn std::io::Read>| {
            let mut text = String::new();
            if let Some(r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        };
        let stdout = read(
            self.child
                .stdout
                .as_mut()
                .map(|s| s as &mut dyn std::io::Read),
        );
        let stderr = read(
            self.child
                .stderr
                .as_mut()
                .map(|s| s as &mut dyn std::io::Read),
        );
        (status, stdout, stderr)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every character that is hard to carry: quotes, backslash, every control
/// character, DEL, non-BMP, and characters of every UTF-8 width.
fn hostile_text() -> String {
    let mut s: String = (0u8..0x20).map(char::from).collect();
    s.push_str("\"quote\" \\back\\slash\\ \t tab \r cr \u{7f} é € 𝄞 🎉 end");
    s
}

#[test]
fn wrap_3_hostile_strings_arrive_byte_exact_as_valid_json() {
    let text = hostile_text();
    let big: String = text.repeat((3 << 20) / text.len()); // several megabytes
    let peer = Peer::unix();
    let value = json!({"text": text, "big": big, "n": [1, 2.5, -0.0, 1e300, null]});
    let mut w = Worker::with_payload(&v1_payload(
        &peer.socket_path,
        json!({"scenario": "echo", "text": text, "value": value}),
    ));
    let mut conn = peer.accept();
    let mut messages = Vec::new();
    while let Some((raw, m)) = conn.next_raw() {
        assert!(std::str::from_utf8(&raw).is_ok(), "FRAME-2: valid UTF-8");
        assert!(
            !raw.iter().any(|&b| b < 0x20),
            "FRAME-2: no raw control character"
        );
        let done = m["type"] == "completed";
        messages.push(m);
        if done {
            break;
        }
    }
    assert_eq!(messages[1]["message"].as_str(), Some(text.as_str()));
    assert_eq!(messages[2]["message"].as_str(), Some(text.as_str()));
    assert_eq!(messages[3]["result"], value);
    assert_eq!(
        messages[3]["result"]["big"].as_str().unwrap().len(),
        big.len()
    );
    assert!(w.wait().success());
}

#[test]
fn frame_2_a_lone_surrogate_in_the_payload_arrives_as_a_replacement_character() {
    let peer = Peer::unix();
    let payload = v1_payload(
        &peer.socket_path,
        json!({"scenario": "echo", "text": "LONE"}),
    );
    let line = payload
        .to_string()
        .replace("LONE", r"a\ud800b\udc00c\ud83c\udf89")
        + "\n";
    let mut w = Worker::spawn(line.as_bytes(), &[], Stdio::piped(), Stdio::piped());
    let mut conn = peer.accept();
    let log = conn
        .until_terminal()
        .into_iter()
        .find(|m| m["type"] == "log")
        .unwrap();
    assert_eq!(log["message"], "a\u{fffd}b\u{fffd}c🎉");
    assert!(w.wait().success());
}

#[test]
fn reconnect_6_no_server_means_exit_1_without_running_the_job_code() {
    let dir = common::peer::temp_dir();
    let socket = dir.join("nobody.sock");
    let mut payload = v1_payload(
        socket.to_str().unwrap(),
        json!({"scenario": "crash", "code": 7}),
    );
    payload["reconnectWindowMs"] = json!(300);
    let (status, stdout, stderr) = Worker::with_payload(&payload).output();
    assert_eq!(
        status.code(),
        Some(1),
        "not 7: the job code never ran; stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("RECONNECT-6"), "{stderr}");
    assert!(stdout.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pay_6_a_malformed_payload_exits_2_with_one_line_and_never_connects() {
    let peer = Peer::unix();
    let env = [
        ("EXTJOB_JOB_ID", "j"),
        ("EXTJOB_JOB_NAME", "n"),
        ("EXTJOB_SOCKET_PATH", peer.socket_path.as_str()),
    ];
    for stdin in [&b"{not json\n"[..], b"[1]\n", b"{\"jobId\":\"\"}\n"] {
        let (status, _, stderr) =
            Worker::spawn(stdin, &env, Stdio::piped(), Stdio::piped()).output();
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("PAY-"), "{stderr}");
    }
    assert!(
        peer.try_accept(Duration::from_millis(100)).is_none(),
        "PAY-6: never connects"
    );
}

#[test]
fn env_2_an_empty_stdin_takes_everything_from_the_environment() {
    let peer = Peer::tcp();
    let port = peer.socket_path.rsplit(':').next().unwrap().to_owned();
    let env = [
        ("DONKEYLABS_JOB_ID", "j_env"),
        ("DONKEYLABS_JOB_NAME", "n"),
        ("DONKEYLABS_TCP_PORT", port.as_str()),
    ];
    let mut w = Worker::spawn(b"", &env, Stdio::piped(), Stdio::piped());
    let mut conn = peer.accept();
    let got = conn.until_terminal();
    assert_eq!(got[0]["jobId"], "j_env");
    assert_eq!(got.last().unwrap()["result"], json!({"ok": true}));
    assert!(w.wait().success());
}

#[test]
fn pay_3_huge_intervals_are_accepted_and_mean_never() {
    let peer = Peer::unix();
    let mut payload = extended_payload(&peer.socket_path, json!({}), None);
    payload["heartbeatIntervalMs"] = json!(u64::MAX);
    payload["heartbeatTimeoutMs"] = json!(u64::MAX);
    payload["reconnectWindowMs"] = json!(u64::MAX);
    let mut w = Worker::with_payload(&payload);
    let mut conn = peer.accept();
    conn.handshake(0, u64::MAX);
    let mut last = Value::Null;
    while let Some((_, m)) = conn.next_raw() {
        conn.ack(&m["seq"]);
        last = m;
        if last["type"] == "completed" {
            break;
        }
    }
    assert_eq!(last["result"], json!({"ok": true}));
    assert!(w.wait().success());
}

#[test]
fn wrap_2_a_panic_fails_the_job_with_its_message_and_a_backtrace() {
    let peer = Peer::unix();
    let mut w = Worker::with_payload(&v1_payload(
        &peer.socket_path,
        json!({"scenario": "panic", "message": "boom"}),
    ));
    let mut conn = peer.accept();
    let failed = conn.until_terminal().pop().unwrap();
    assert_eq!(failed["type"], "failed");
    assert_eq!(failed["error"], "panic: boom");
    let stack = failed["stack"].as_str().unwrap();
    assert!(
        stack.contains("panicked at") && stack.contains("extjob-fixture.rs"),
        "{stack}"
    );
    assert_eq!(w.wait().code(), Some(1), "EXIT-2");
}

#[test]
fn wrap_2_an_error_fails_the_job_and_permanent_is_not_retried() {
    let peer = Peer::unix();
    let mut w = Worker::with_payload(&v1_payload(
        &peer.socket_path,
        json!({"scenario": "no-such"}),
    ));
    let mut conn = peer.accept();
    let failed = conn.until_terminal().pop().unwrap();
    assert_eq!(failed["error"], "unknown scenario \"no-such\" (FIX-2)");
    assert_eq!(failed["retryable"], false);
    assert_eq!(w.wait().code(), Some(1));
}

#[test]
fn wrap_5_broken_or_failing_stdout_and_stderr_do_not_stop_the_worker() {
    let peer = Peer::unix();
    let payload = format!(
        "{}\n",
        v1_payload(&peer.socket_path, json!({"scenario": "panic"}))
    );
    // stderr: a pipe nobody reads (EPIPE); stdout: a device that refuses writes.
    let full = std::fs::File::create("/dev/full").unwrap();
    let mut w = Worker::spawn(payload.as_bytes(), &[], Stdio::from(full), Stdio::piped());
    drop(w.child.stderr.take());
    let mut conn = peer.accept();
    let failed = conn.until_terminal().pop().unwrap();
    assert_eq!(failed["error"], "panic: fixture panic");
    assert_eq!(w.wait().code(), Some(1));
}

extern "C" {
    fn close(fd: i32) -> i32;
}

#[test]
fn wrap_5_closed_stdout_and_stderr_never_carry_protocol_traffic() {
    use std::os::unix::process::CommandExt;
    let peer = Peer::unix();
    let payload = format!(
        "{}\n",
        v1_payload(&peer.socket_path, json!({"scenario": "panic"}))
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_extjob-fixture"));
    cmd.stdin(Stdio::piped());
    // SAFETY: close(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            close(1);
            close(2);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let mut w = Worker { child };
    let mut conn = peer.accept();
    let got = conn.until_terminal();
    assert_eq!(got[0]["type"], "started");
    assert_eq!(got.last().unwrap()["error"], "panic: fixture panic");
    assert_eq!(w.wait().code(), Some(1));
}

#[test]
fn cancel_3_sigterm_is_a_cancel_request_the_job_code_sees() {
    let peer = Peer::unix();
    let mut w = Worker::with_payload(&v1_payload(
        &peer.socket_path,
        json!({"scenario": "cancel", "ms": 20000}),
    ));
    let mut conn = peer.accept();
    assert_eq!(conn.next()["type"], "started");
    let pid = w.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let failed = conn.until_terminal().pop().unwrap();
    assert_eq!(failed["error"], "cancelled");
    assert_eq!(w.wait().code(), Some(1));
}

#[test]
fn exit_3_the_worker_exits_soon_after_the_terminal_ack() {
    let peer = Peer::unix();
    let mut w = Worker::with_payload(&extended_payload(&peer.socket_path, json!({}), None));
    let mut conn = peer.accept();
    conn.handshake(0, 200);
    let mut acked = None;
    while let Some((_, m)) = conn.next_raw() {
        conn.ack(&m["seq"]);
        if m["type"] == "completed" {
            acked = Some(Instant::now());
            break;
        }
    }
    assert!(w.wait().success());
    let tail = acked.unwrap().elapsed();
    // EXIT-3 allows 1000 ms; the rest is margin for a loaded machine (the
    // worker's real tail is measured in bench/wrapper_throughput.py).
    assert!(tail < Duration::from_secs(3), "EXIT-3: {tail:?}");
}

#[test]
fn spool_2_a_server_that_never_returns_gets_the_result_in_the_spool_file() {
    let mut peer = Peer::unix();
    let spool = peer.dir().join("j.spool");
    let mut payload = extended_payload(
        &peer.socket_path,
        json!({"scenario": "sleep", "ms": 300}),
        Some(spool.to_str().unwrap()),
    );
    payload["reconnectWindowMs"] = json!(300);
    let mut w = Worker::with_payload(&payload);
    let mut conn = peer.accept();
    conn.handshake(0, 200);
    assert_eq!(conn.next()["type"], "started"); // never acknowledged
    peer.close();
    drop(conn);
    assert!(
        w.wait().success(),
        "EXIT-2 follows the result, delivered or spooled"
    );
    let text = std::fs::read_to_string(&spool).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["hello", "started", "completed"]);
    assert_eq!(lines[0]["token"], "tok-0123456789abcdef");
    assert_eq!(lines[2]["result"], json!({"slept": 300}));
}
