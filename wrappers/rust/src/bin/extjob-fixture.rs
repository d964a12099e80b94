//! The Rust wrapper's fixture worker: the scenarios of SPEC.md section 11
//! (FIX-2), chosen by the payload's `data.scenario`, built only on the
//! public API of `extjob_worker`. The conformance suite runs it:
//! `extjob conformance -- target/release/extjob-fixture`.

use std::error::Error;
use std::time::Duration;

use extjob_worker::{Job, Level, Permanent};
use serde_json::{json, Value};

type Outcome = Result<Value, Box<dyn Error>>;

fn main() {
    extjob_worker::run(|job: &Job| {
        // data may be any JSON value (PAY-2); anything but an object with a
        // scenario is the complete scenario (FIX-1).
        let params = job.data().clone();
        let scenario = params["scenario"].as_str().unwrap_or("complete").to_owned();
        play(job, &scenario, &params)
    })
}

fn int(params: &Value, key: &str, default: u64) -> u64 {
    params[key].as_u64().unwrap_or(default)
}

fn play(job: &Job, scenario: &str, p: &Value) -> Outcome {
    match scenario {
        "complete" => {
            job.progress(50.0, "halfway")?;
            Ok(json!({"ok": true}))
        }
        "echo" => {
            let text = p["text"].as_str().unwrap_or("");
            job.log(Level::Info, text)?;
            job.progress(50.0, text)?;
            Ok(p["value"].clone())
        }
        "fail" => Err(p["message"].as_str().unwrap_or("fixture failure").into()),
        "crash" => std::process::exit(int(p, "code", 3) as i32),
        "sleep" => {
            let ms = int(p, "ms", 1000);
            std::thread::sleep(Duration::from_millis(ms)); // blocks the job code for real
            Ok(json!({ "slept": ms }))
        }
        "progress" => {
            let count = int(p, "count", 100);
            for i in 1..=count {
                job.progress(i as f64 * 100.0 / count as f64, format!("step {i}"))?;
            }
            Ok(json!({ "count": count }))
        }
        "logs" => {
            let count = int(p, "count", 10);
            let interval = Duration::from_millis(int(p, "intervalMs", 0));
            for i in 1..=count {
                if i > 1 && !interval.is_zero() {
                    std::thread::sleep(interval);
                }
                job.log_data(Level::Info, format!("line {i}"), &json!({ "i": i }))?;
            }
            Ok(json!({ "count": count }))
        }
        "levels" => {
            for level in Level::ALL {
                job.log_data(level, level.as_str(), &json!({ "level": level.as_str() }))?;
            }
            Ok(Value::Null)
        }
        "cancel" => {
            let ms = int(p, "ms", 30_000);
            match job.cancel_token().wait_timeout(Duration::from_millis(ms)) {
                Some(_) => {
                    job.log(Level::Info, "cancel requested")?;
                    Err("cancelled".into())
                }
                None => Ok(json!({"cancelled": false})),
            }
        }
        "checkpoint" => {
            if let Some(last) = job.last_checkpoint() {
                return Ok(json!({ "resumedFrom": last }));
            }
            let value = match &p["value"] {
                Value::Null => json!({"step": 1}),
                v => v.clone(),
            };
            job.checkpoint(&value)?;
            Err("checkpoint saved".into())
        }
        // Not in FIX-2: the panic path of WRAP-2, for this crate's own tests.
        "panic" => panic!("{}", p["message"].as_str().unwrap_or("fixture panic")),
        "large" => Ok(Value::String("x".repeat(int(p, "bytes", 1 << 20) as usize))),
        other => Err(Permanent::new(format!("unknown scenario {other:?} (FIX-2)")).into()),
    }
}
