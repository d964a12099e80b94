//! An example job in Rust: "counts words" in a number of chunks, one step at
//! a time, with the extjob-worker crate. data: {"steps": 20, "delayMs": 500}.
//!
//! It checkpoints after every chunk, so a retried attempt resumes where the
//! last one stopped (CKPT-2), and it stops promptly on a cancel (CANCEL-3).

use std::error::Error;
use std::time::Duration;

use extjob_worker::{Job, Permanent};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Input {
    steps: u64,
    delay_ms: u64,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            steps: 20,
            delay_ms: 500,
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Progress {
    chunk: u64,
    words: u64,
}

fn count_words(job: &Job) -> Result<serde_json::Value, Box<dyn Error>> {
    let input: Input = job.data_as().map_err(Permanent::new)?; // bad data: do not retry
    let mut done: Progress = match job.last_checkpoint() {
        Some(saved) => serde_json::from_value(saved)?,
        None => Progress::default(),
    };
    if done.chunk > 0 {
        job.info(format!("resuming after chunk {}", done.chunk))?;
    }
    let cancel = job.cancel_token();
    while done.chunk < input.steps {
        // The real work would go here (heartbeats go on meanwhile); waiting
        // on the cancel token instead of sleeping makes a cancel prompt.
        if let Some(request) = cancel.wait_timeout(Duration::from_millis(input.delay_ms)) {
            return Err(format!(
                "cancelled ({}) after {} of {} chunks",
                request.reason, done.chunk, input.steps
            )
            .into());
        }
        done.chunk += 1;
        done.words += 1000 + done.chunk * 7;
        job.checkpoint(&done)?;
        let percent = 100.0 * done.chunk as f64 / input.steps as f64;
        job.progress(percent, format!("chunk {} of {}", done.chunk, input.steps))?;
        if done.chunk.is_multiple_of(5) {
            job.log_data(
                extjob_worker::Level::Info,
                format!("{} words so far", done.words),
                &json!({ "chunk": done.chunk }),
            )?;
        }
    }
    Ok(json!({ "chunks": done.chunk, "words": done.words }))
}

fn main() {
    extjob_worker::run(count_words)
}
