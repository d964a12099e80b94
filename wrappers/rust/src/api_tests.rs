//! The job API against the test peer, in-process: threads, back-pressure,
//! replay of what a dropped connection lost.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::job::Job;
use crate::payload::Payload;

use crate::peer;

fn start(payload: Value) -> Job {
    let p = Payload::parse(payload.to_string().as_bytes(), |_| None).unwrap();
    Job::start(p, crate::CancelToken::new())
}

#[test]
fn wrap_4_many_threads_never_interleave_lines_and_keep_their_order() {
    let peer = peer::Peer::unix();
    let job = start(peer::v1_payload(&peer.socket_path, json!({})));
    let mut conn = peer.accept();
    assert_eq!(conn.next()["type"], "started");
    job.session().wait_started().unwrap();
    let (threads, each) = (8, 2000);
    let reading = std::thread::spawn(move || conn.until_terminal());
    std::thread::scope(|s| {
        for t in 0..threads {
            let job = job.clone();
            s.spawn(move || {
                for i in 0..each {
                    job.log_data(
                        crate::Level::Info,
                        "x".repeat(i % 300),
                        &json!({"t": t, "i": i}),
                    )
                    .unwrap();
                }
            });
        }
    });
    job.complete(&"done").unwrap();
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut logs = 0;
    for m in reading.join().unwrap() {
        if m["type"] == "log" {
            let (t, i) = (
                m["data"]["t"].as_u64().unwrap(),
                m["data"]["i"].as_u64().unwrap(),
            );
            assert_eq!(next.insert(t, i + 1).unwrap_or(0), i, "in order per thread");
            logs += 1;
        }
    }
    assert_eq!(logs, threads * each);
}

#[test]
fn replay_4_a_dropped_connection_loses_nothing_and_duplicates_nothing() {
    let peer = peer::Peer::unix();
    let job = start(peer::extended_payload(&peer.socket_path, json!({}), None));
    let mut conn = peer.accept();
    conn.handshake(0, 200);
    let started = conn.next();
    conn.ack(&started["seq"]);
    job.session().wait_started().unwrap();
    for i in 0..100 {
        job.log_data(crate::Level::Info, "l", &json!({"i": i}))
            .unwrap();
    }
    // Read 50, acknowledge 20, then drop the connection.
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push(conn.next());
    }
    let acked = seen[19]["seq"].as_u64().unwrap();
    conn.ack(&json!(acked));
    // The ack is taken in before the connection goes.
    let until = std::time::Instant::now() + peer::DEADLINE;
    while job
        .session()
        .lock()
        .buf
        .front()
        .is_some_and(|m| m.seq <= acked)
    {
        assert!(std::time::Instant::now() < until, "the ack is applied");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(conn);
    let mut conn = peer.accept();
    // A lastSeq below the last ack: what the ack covered is gone for good,
    // everything after it comes again, in seq order (REPLAY-4).
    conn.handshake(seen[9]["seq"].as_u64().unwrap(), 200);
    job.complete(&json!({"n": 100})).unwrap();
    let replayed = conn.until_terminal();
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let first = seqs[0];
    assert!(
        first > seen[19]["seq"].as_u64().unwrap(),
        "acked messages are not resent: {first}"
    );
    let mut all: Vec<u64> = seen[..20]
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    all.extend(&seqs);
    assert_eq!(
        all,
        (1..=102).skip(1).collect::<Vec<u64>>(),
        "every log once, then completed"
    );
    conn.ack(&json!(102));
    assert_eq!(job.wait_settled(), crate::session::Settled::Delivered);
}

/// Random text from every plane (a seeded xorshift: the same strings each
/// run), logged and echoed as a result: each arrives as sent (WRAP-3).
#[test]
fn wrap_3_random_text_from_every_plane_arrives_as_sent() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let texts: Vec<String> = (0..300)
        .map(|_| {
            let len = (next() % 200) as usize;
            (0..len)
                .filter_map(|_| {
                    let wide = next() % 4 == 0;
                    let code = if wide {
                        next() % 0x11_0000
                    } else {
                        next() % 0x800
                    };
                    char::from_u32(code as u32) // skips the surrogate range
                })
                .collect()
        })
        .collect();
    let peer = peer::Peer::unix();
    let job = start(peer::v1_payload(&peer.socket_path, json!({})));
    let mut conn = peer.accept();
    assert_eq!(conn.next()["type"], "started");
    job.session().wait_started().unwrap();
    let reading = std::thread::spawn(move || {
        let mut raw_lines = Vec::new();
        while let Some((raw, m)) = conn.next_raw() {
            let done = m["type"] == "completed";
            raw_lines.push((raw, m));
            if done {
                break;
            }
        }
        raw_lines
    });
    for t in &texts {
        job.info(t).unwrap();
    }
    job.complete(&texts).unwrap();
    let got = reading.join().unwrap();
    for (raw, _) in &got {
        assert!(std::str::from_utf8(raw).is_ok() && !raw.iter().any(|&b| b < 0x20));
    }
    let logged: Vec<&str> = got
        .iter()
        .filter_map(|(_, m)| m["message"].as_str())
        .collect();
    assert_eq!(logged, texts.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(got.last().unwrap().1["result"], json!(texts));
}
