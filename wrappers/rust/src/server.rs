//! What the server writes (CTRL-1..CTRL-6): its lines and their messages.

use std::io::{self, BufRead};

use serde_json::Value;

/// The longest server line kept (LIMIT-3 asks for 1 MiB); longer lines are
/// skipped in constant memory (FRAME-4).
pub(crate) const MAX_SERVER_LINE: usize = 1 << 20;

const ERROR_CODES: [&str; 8] = [
    "invalid_json",
    "invalid_message",
    "line_too_long",
    "wrong_job",
    "auth",
    "unknown_type",
    "out_of_order",
    "duplicate_terminal",
];

/// One server message, checked against its schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ServerMessage {
    Welcome {
        features: Vec<String>,
        last_seq: u64,
        heartbeat_interval_ms: u64,
    },
    Ack {
        seq: u64,
    },
    Cancel {
        reason: String,
        deadline_ms: u64,
    },
    Error {
        code: String,
        message: String,
    },
    /// A private type (`x-...`, MSG-2): valid, and ignored.
    Private,
}

/// Why a server line was not a message: a CTRL-5 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineError {
    InvalidJson,
    InvalidMessage,
}

impl LineError {
    #[cfg(test)]
    pub(crate) fn code(self) -> &'static str {
        match self {
            LineError::InvalidJson => "invalid_json",
            LineError::InvalidMessage => "invalid_message",
        }
    }
}

/// Decodes one server line; the job id it names is returned beside it.
pub(crate) fn parse(line: &[u8]) -> Result<(String, ServerMessage), LineError> {
    let value: Value = serde_json::from_slice(line).map_err(|_| LineError::InvalidJson)?;
    let Value::Object(o) = value else {
        return Err(LineError::InvalidMessage);
    };
    let bad = LineError::InvalidMessage;
    let string = |key: &str| o.get(key).and_then(Value::as_str);
    let int = |key: &str, min: u64| o.get(key).and_then(Value::as_u64).filter(|n| *n >= min);
    let kind = string("type").filter(|t| !t.is_empty()).ok_or(bad)?;
    let job_id = string("jobId")
        .filter(|j| (1..=256).contains(&j.chars().count()))
        .ok_or(bad)?;
    int("timestamp", 0).ok_or(bad)?;
    let message = match kind {
        _ if kind.starts_with("x-") => ServerMessage::Private,
        "welcome" => {
            if int("protocolVersion", 1) != Some(1) {
                return Err(bad);
            }
            let features = o
                .get("features")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|f| f.as_str().map(str::to_owned)).collect())
                .ok_or(bad)?;
            ServerMessage::Welcome {
                features,
                last_seq: int("lastSeq", 0).ok_or(bad)?,
                heartbeat_interval_ms: int("heartbeatIntervalMs", 10).ok_or(bad)?,
            }
        }
        "ack" => ServerMessage::Ack {
            seq: int("seq", 1).ok_or(bad)?,
        },
        "cancel" => ServerMessage::Cancel {
            reason: string("reason")
                .filter(|r| !r.is_empty())
                .ok_or(bad)?
                .to_owned(),
            deadline_ms: int("deadlineMs", 0).ok_or(bad)?,
        },
        "error" => ServerMessage::Error {
            code: string("code")
                .filter(|c| ERROR_CODES.contains(c))
                .ok_or(bad)?
                .to_owned(),
            message: string("message").ok_or(bad)?.to_owned(),
        },
        _ => return Err(bad), // a type this version does not know (CTRL-6)
    };
    Ok((job_id.to_owned(), message))
}

/// Splits a stream into lines (FRAME-1), tolerating `\r\n`, skipping empty
/// lines and lines longer than `max` without holding them (FRAME-4).
pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
    line: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            line: Vec::new(),
        }
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next non-empty line, without its end; `Ok(None)` at end of file.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        let mut too_long = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if !too_long {
                if self.line.len() + chunk.len() > self.max + 1 {
                    too_long = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let consumed = found.unwrap_or(available.len());
            self.inner.consume(consumed);
            if found.is_none() {
                continue;
            }
            let start = self.line.iter().position(|b| !b.is_ascii_whitespace());
            if too_long || start.is_none() {
                self.line.clear();
                too_long = false;
                continue;
            }
            let end = self
                .line
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .unwrap_or(0)
                + 1;
            let start = start.unwrap_or(0);
            return Ok(Some(&self.line[start..end]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_4_long_lines_are_skipped_and_crlf_tolerated() {
        let mut input = b"\r\n  \n{\"a\":1}\r\n".to_vec();
        input.extend(std::iter::repeat(b'x').take(5000));
        input.extend_from_slice(b"\nlast\n");
        let mut r = LineReader::new(io::BufReader::with_capacity(64, &input[..]), 100);
        assert_eq!(r.next_line().unwrap(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(r.next_line().unwrap(), Some(&b"last"[..]));
        assert_eq!(r.next_line().unwrap(), None);
    }

    #[test]
    fn ctrl_6_unknown_types_are_errors_private_ones_are_not() {
        let private = br#"{"type":"x-debug","jobId":"j","timestamp":1}"#;
        assert_eq!(parse(private).unwrap().1, ServerMessage::Private);
        let unknown = br#"{"type":"pause","jobId":"j","timestamp":1}"#;
        assert_eq!(parse(unknown).unwrap_err(), LineError::InvalidMessage);
        assert_eq!(parse(b"nope").unwrap_err(), LineError::InvalidJson);
    }
}
