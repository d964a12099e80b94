//! The shared vectors of `schema/vectors/` (one source of truth for every
//! wrapper), read by this crate's own decoders and encoders.

use std::path::Path;

use serde_json::{json, Value};

use crate::job::{Job, Level};
use crate::payload::Payload;
use crate::server;

use crate::peer;

fn vectors(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schema/vectors")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let tests = v["tests"].as_array().unwrap().clone();
    assert!(!tests.is_empty(), "{file} has tests");
    tests
}

fn name(v: &Value) -> String {
    format!(
        "{}/{}",
        v["requirement"].as_str().unwrap(),
        v["description"].as_str().unwrap()
    )
}

fn line(v: &Value) -> Vec<u8> {
    if let Some(text) = v["line"].as_str() {
        return text.as_bytes().to_vec();
    }
    decode_base64(v["lineBase64"].as_str().unwrap())
}

fn decode_base64(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let d = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// PAY-2..PAY-6: the worker accepts exactly the valid payloads (with no
/// environment to fall back on), except that it reads one lacking only
/// `data` as `{}` (PAY-6 leniency).
#[test]
fn pay_2_to_6_payload_vectors() {
    for v in vectors("payloads.json") {
        let raw = serde_json::to_vec(&v["data"]).unwrap();
        let parsed = Payload::parse(&raw, |_| None);
        let lacks_only_data = v["description"] == "missing data";
        if v["valid"] == true || lacks_only_data {
            let p = parsed.unwrap_or_else(|e| panic!("{}: refused: {e}", name(&v)));
            assert_eq!(p.job_id, v["data"]["jobId"], "{}", name(&v));
            assert_eq!(p.name, v["data"]["name"], "{}", name(&v));
            assert_eq!(p.socket_path, v["data"]["socketPath"], "{}", name(&v));
            let data = if lacks_only_data {
                json!({})
            } else {
                v["data"]["data"].clone()
            };
            assert_eq!(p.data, data, "{}", name(&v));
            assert_eq!(
                p.checkpoint.as_ref(),
                v["data"].get("checkpoint").filter(|c| !c.is_null())
            );
        } else {
            let e = parsed
                .err()
                .unwrap_or_else(|| panic!("{}: accepted", name(&v)));
            assert_eq!(v["error"], "invalid_payload");
            assert!(!e.to_string().contains('\n'), "PAY-6: one line");
        }
    }
}

/// CTRL-1..CTRL-6: server messages are checked against their schemas; what
/// fails is ignored by the worker (CTRL-6).
#[test]
fn ctrl_1_to_6_server_message_vectors() {
    for v in vectors("server-messages.json") {
        let raw = serde_json::to_vec(&v["data"]).unwrap();
        match server::parse(&raw) {
            Ok(_) => assert_eq!(v["valid"], true, "{}: accepted", name(&v)),
            Err(e) => {
                assert_eq!(v["valid"], false, "{}: refused", name(&v));
                assert_eq!(v["error"], e.code(), "{}", name(&v));
            }
        }
    }
}

/// FRAME-1..FRAME-3 from the worker's side: every line a server reads as
/// invalid JSON is refused by this crate's decoder too; every valid line,
/// decoded and encoded again by this crate, follows FRAME-2 and decodes to
/// the same value.
#[test]
fn frame_1_to_3_line_vectors() {
    for v in vectors("lines.json") {
        let raw = line(&v);
        let decoded = server::parse(&raw);
        if v["error"] == "invalid_json" {
            assert_eq!(
                decoded.unwrap_err(),
                server::LineError::InvalidJson,
                "{}",
                name(&v)
            );
            continue;
        }
        if v["error"] == "invalid_message" {
            assert_eq!(
                decoded.unwrap_err(),
                server::LineError::InvalidMessage,
                "{}",
                name(&v)
            );
            continue;
        }
        if v["valid"] != true {
            continue; // a JSON line of the wrong type: a server-side concern
        }
        let value: Value = serde_json::from_slice(&raw).unwrap();
        let encoded = crate::json::encode(&value).unwrap();
        assert!(!encoded.bytes().any(|b| b < 0x20), "FRAME-2: {encoded}");
        let again: Value = serde_json::from_str(&encoded).unwrap();
        assert_eq!(again, value, "{}", name(&v));
    }
}

/// MSG-3..MSG-8, CKPT-1: every valid worker message the job code can cause
/// is what the public API sends for it, over a real socket.
#[test]
fn msg_3_to_8_worker_message_vectors_through_the_api() {
    let mut checked = 0;
    for v in vectors("worker-messages.json") {
        let want = &v["data"];
        let kind = want["type"].as_str().unwrap_or("");
        let api_made = ["progress", "log", "completed", "failed", "checkpoint"].contains(&kind);
        if v["valid"] != true
            || !api_made
            || want["jobId"] != "j_1"
            || want.get("somethingNew").is_some()
            || want
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("x-"))
        {
            continue;
        }
        let peer = peer::Peer::unix();
        let payload = peer::extended_payload(&peer.socket_path, json!({}), None);
        let payload = Payload::parse(payload.to_string().as_bytes(), |_| None).unwrap();
        let job = Job::start(payload, crate::CancelToken::new());
        let mut conn = peer.accept();
        conn.handshake(0, 10_000);
        let started = conn.next();
        conn.ack(&started["seq"]);
        job.session().wait_started().unwrap();
        call_api(&job, want).unwrap_or_else(|e| panic!("{}: {e}", name(&v)));
        let mut got = conn.next();
        conn.ack(&got["seq"]);
        let mut want = want.clone();
        for m in [&mut got, &mut want] {
            let o = m.as_object_mut().unwrap();
            for key in ["timestamp", "seq", "stack"] {
                o.remove(key);
            }
            let nulls: Vec<String> = o
                .iter()
                .filter(|(k, val)| {
                    val.is_null() && *k != "result" && !(*k == "data" && kind == "checkpoint")
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in nulls {
                o.remove(&k); // MSG-2: null means absent
            }
            if kind == "completed" {
                o.entry("result").or_insert(Value::Null); // MSG-7: absent means null
            }
            if kind == "progress" {
                let p = o["percent"].as_f64().unwrap();
                o.insert("percent".into(), json!(p)); // 50 and 50.0 are one number
            }
        }
        assert_eq!(got, want, "{}", name(&v));
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} vectors were made through the API"
    );
}

fn call_api(job: &Job, m: &Value) -> Result<(), crate::Error> {
    let message = m.get("message").and_then(Value::as_str);
    let data = m.get("data").cloned().unwrap_or(Value::Null);
    match m["type"].as_str().unwrap() {
        "progress" => job.progress_data(m["percent"].as_f64().unwrap(), message, &data),
        "log" => {
            let level: Level = m["level"].as_str().unwrap().parse()?;
            job.log_data(level, message.unwrap_or(""), &data)
        }
        "checkpoint" => job.checkpoint(&data).map(|_| ()),
        "completed" => job.complete(&m.get("result").cloned().unwrap_or(Value::Null)),
        _ => job.fail_with(
            m["error"].as_str().unwrap(),
            m.get("stack").and_then(Value::as_str),
            m.get("retryable") != Some(&json!(false)),
        ),
    }
}
