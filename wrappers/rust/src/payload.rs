//! The payload on standard input and its environment fallback (PAY, ENV).

use std::io::{BufRead, Read};
use std::net::{SocketAddr, ToSocketAddrs};

use serde_json::{Map, Value};

use crate::error::PayloadError;
use crate::json::repair_lone_surrogates;

/// The heartbeat interval when the payload names none (HB-2).
pub const V1_HEARTBEAT_INTERVAL_MS: u64 = 5000;
/// How long to retry once the job code has ended (RECONNECT-3).
pub const DEFAULT_RECONNECT_WINDOW_MS: u64 = 60_000;
/// The longest line a server accepts by default (LIMIT-1).
pub const DEFAULT_MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;
/// The largest payload (LIMIT-2).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The job as the server described it (SPEC section 2), with the defaults of
/// section 12 for what the payload leaves out.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Payload {
    /// The job's id (PAY-2).
    pub job_id: String,
    /// The job definition's name (PAY-2).
    pub name: String,
    /// The job's input, any JSON value; `{}` when the payload has none.
    pub data: Value,
    /// A Unix socket path or `tcp://HOST:PORT` (TRANS-1).
    pub socket_path: String,
    /// The extensions the server offers (NEG-1); none from a v1 server.
    pub features: Vec<String>,
    /// The attempt's secret (AUTH-1).
    pub token: Option<String>,
    /// How often to heartbeat (HB-1), when the server said.
    pub heartbeat_interval_ms: Option<u64>,
    /// When the server calls the job stale (STALE-1), when it said.
    pub heartbeat_timeout_ms: Option<u64>,
    /// How long to retry once the job code has ended (RECONNECT-3).
    pub reconnect_window_ms: u64,
    /// The longest line the server accepts (LIMIT-1).
    pub max_line_bytes: u64,
    /// This attempt's number, 1 for the first (CKPT-3).
    pub attempt: u64,
    /// The attempts allowed in all (CKPT-3), when the server said.
    pub max_attempts: Option<u64>,
    /// Where to spool an undeliverable result (SPOOL-1).
    pub spool_path: Option<String>,
    /// The last checkpoint of an earlier attempt (CKPT-2); `None` when there
    /// is none (absent or `null`, MSG-2).
    pub checkpoint: Option<Value>,
}

const ENV_NAMES: [(&str, &str, &str); 3] = [
    ("jobId", "EXTJOB_JOB_ID", "DONKEYLABS_JOB_ID"),
    ("name", "EXTJOB_JOB_NAME", "DONKEYLABS_JOB_NAME"),
    ("socketPath", "EXTJOB_SOCKET_PATH", "DONKEYLABS_SOCKET_PATH"),
];

impl Payload {
    /// Reads the payload line from `stdin` (to the first newline or end of
    /// file, PAY-1) and parses it with [`Payload::parse`].
    pub fn read(
        stdin: impl Read,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Payload, PayloadError> {
        let mut line = Vec::new();
        let mut limited = std::io::BufReader::new(stdin.take(MAX_PAYLOAD_BYTES as u64 + 2));
        limited
            .read_until(b'\n', &mut line)
            .map_err(|e| PayloadError::new("PAY-1", format!("cannot read standard input: {e}")))?;
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::new(
                "LIMIT-2",
                format!("larger than {MAX_PAYLOAD_BYTES} bytes"),
            ));
        }
        Payload::parse(&line, env)
    }

    /// Parses one payload line. It may be empty (only whitespace): then
    /// `jobId`, `name` and `socketPath` come from the environment, as do the
    /// ones a payload lacks: `EXTJOB_*` first, then `DONKEYLABS_*` (a
    /// non-empty value wins), and `DONKEYLABS_TCP_PORT` alone gives
    /// `tcp://127.0.0.1:PORT` (ENV-2). `env` is usually
    /// `|name| std::env::var(name).ok()`.
    ///
    /// A string that escapes an unpaired surrogate (`"\ud800"`) is read with
    /// U+FFFD in its place: Rust strings cannot hold one (FRAME-2).
    ///
    /// ```
    /// use extjob_worker::Payload;
    ///
    /// let line = br#"{"jobId":"j_1","name":"resize","data":{"n":2},"socketPath":"/tmp/j.sock"}"#;
    /// let p = Payload::parse(line, |_| None).unwrap();
    /// assert_eq!((p.job_id.as_str(), p.data["n"].as_i64()), ("j_1", Some(2)));
    /// assert!(p.features.is_empty()); // a v1 server
    ///
    /// let env = |name: &str| (name == "DONKEYLABS_TCP_PORT").then(|| "4100".to_string());
    /// let p = Payload::parse(br#"{"jobId":"j_1","name":"resize"}"#, env).unwrap();
    /// assert_eq!(p.socket_path, "tcp://127.0.0.1:4100");
    ///
    /// assert!(Payload::parse(b"[1,2]", |_| None).is_err()); // PAY-6
    /// ```
    pub fn parse(
        raw: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Payload, PayloadError> {
        let fields = if raw.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            let text = repair_lone_surrogates(raw);
            match serde_json::from_slice::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    return Err(PayloadError::new(
                        "PAY-6",
                        format!("a JSON {}, not an object", kind_of(&other)),
                    ))
                }
                Err(e) => return Err(PayloadError::new("PAY-6", format!("not valid JSON ({e})"))),
            }
        };
        let present = |key: &str| fields.get(key).filter(|v| !v.is_null());
        let mut identity = Vec::with_capacity(3);
        for (key, primary, fallback) in ENV_NAMES {
            let value = match present(key) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(_) => {
                    return Err(PayloadError::new(
                        "PAY-2",
                        format!("{key} must be a non-empty string"),
                    ))
                }
                None => from_env(key, primary, fallback, &env)?,
            };
            if key != "socketPath" && value.chars().count() > 256 {
                return Err(PayloadError::new(
                    "PAY-2",
                    format!("{key} is longer than 256 characters"),
                ));
            }
            identity.push(value);
        }
        let socket_path = identity.pop().unwrap_or_default();
        if let Some(rest) = socket_path.strip_prefix("tcp://") {
            parse_tcp(rest).map_err(|why| PayloadError::new("TRANS-1", why))?;
        }
        let name = identity.pop().unwrap_or_default();
        let job_id = identity.pop().unwrap_or_default();

        let int = |key: &str,
                   minimum: u64,
                   requirement: &'static str|
         -> Result<Option<u64>, PayloadError> {
            match present(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n >= minimum => Ok(Some(n)),
                    _ => Err(PayloadError::new(
                        requirement,
                        format!("{key} must be an integer >= {minimum}, not {v}"),
                    )),
                },
            }
        };
        let protocol_version = int("protocolVersion", 1, "NEG-1")?;
        if protocol_version.is_some_and(|v| v != 1) {
            return Err(PayloadError::new("NEG-1", "protocolVersion must be 1"));
        }
        let heartbeat_interval_ms = int("heartbeatIntervalMs", 10, "HB-1")?;
        let heartbeat_timeout_ms = int("heartbeatTimeoutMs", 30, "STALE-1")?;
        let reconnect_window_ms =
            int("reconnectWindowMs", 0, "RECONNECT-3")?.unwrap_or(DEFAULT_RECONNECT_WINDOW_MS);
        let max_line_bytes =
            int("maxLineBytes", 65536, "LIMIT-1")?.unwrap_or(DEFAULT_MAX_LINE_BYTES);
        let attempt = int("attempt", 1, "CKPT-3")?.unwrap_or(1);
        let max_attempts = int("maxAttempts", 1, "CKPT-3")?;

        let features = match present("features") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|f| f.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    PayloadError::new("NEG-1", "features must be an array of strings")
                })?,
            Some(_) => {
                return Err(PayloadError::new(
                    "NEG-1",
                    "features must be an array of strings",
                ))
            }
        };
        let token = match present("token") {
            None => None,
            Some(Value::String(t)) if (16..=256).contains(&t.chars().count()) => {
                if protocol_version.is_none() || present("features").is_none() {
                    return Err(PayloadError::new(
                        "PAY-3",
                        "a payload with a token needs protocolVersion and features",
                    ));
                }
                Some(t.clone())
            }
            Some(_) => {
                return Err(PayloadError::new(
                    "AUTH-1",
                    "token must be a string of 16 to 256 characters",
                ))
            }
        };
        let spool_path = match present("spoolPath") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(PayloadError::new(
                    "SPOOL-1",
                    "spoolPath must be a non-empty string",
                ))
            }
        };
        let checkpoint = present("checkpoint").cloned();
        let mut fields = fields;
        let data = fields
            .remove("data")
            .unwrap_or_else(|| Value::Object(Map::new())); // PAY-6: lacking only data is {}
        Ok(Payload {
            job_id,
            name,
            data,
            socket_path,
            features,
            token,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            reconnect_window_ms,
            max_line_bytes,
            attempt,
            max_attempts,
            spool_path,
            checkpoint,
        })
    }
}

fn from_env(
    key: &str,
    primary: &str,
    fallback: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, PayloadError> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(v) = non_empty(primary).or_else(|| non_empty(fallback)) {
        return Ok(v);
    }
    if key == "socketPath" {
        if let Some(port) = non_empty("DONKEYLABS_TCP_PORT") {
            return Ok(format!("tcp://127.0.0.1:{port}"));
        }
    }
    Err(PayloadError::new(
        "ENV-2",
        format!("no {key}: not in the payload, {primary} or {fallback}"),
    ))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where a socket path points (TRANS-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    Unix(String),
    Tcp { host: String, port: u16 },
}

impl Address {
    pub(crate) fn of(socket_path: &str) -> Address {
        match socket_path.strip_prefix("tcp://").map(parse_tcp) {
            Some(Ok((host, port))) => Address::Tcp { host, port },
            _ => Address::Unix(socket_path.to_owned()),
        }
    }

    pub(crate) fn resolve(&self) -> Vec<SocketAddr> {
        match self {
            Address::Unix(_) => Vec::new(),
            Address::Tcp { host, port } => (host.as_str(), *port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .unwrap_or_default(),
        }
    }
}

/// `HOST:PORT`, HOST an IPv4 address, a bracketed IPv6 address or a name.
fn parse_tcp(rest: &str) -> Result<(String, u16), String> {
    let bad = || format!("socketPath tcp://{rest} is not tcp://HOST:PORT");
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_2_extjob_wins_over_donkeylabs_and_the_payload_over_both() {
        let env = |name: &str| match name {
            "EXTJOB_JOB_ID" => Some("from-extjob".to_owned()),
            "DONKEYLABS_JOB_ID" => Some("from-donkeylabs".to_owned()),
            "EXTJOB_JOB_NAME" => Some(String::new()), // empty: the next one wins
            "DONKEYLABS_JOB_NAME" => Some("dl-name".to_owned()),
            "DONKEYLABS_SOCKET_PATH" => Some("/tmp/s.sock".to_owned()),
            _ => None,
        };
        let p = Payload::parse(b"", env).unwrap();
        assert_eq!(
            (p.job_id.as_str(), p.name.as_str()),
            ("from-extjob", "dl-name")
        );
        assert_eq!(
            (p.socket_path.as_str(), &p.data),
            ("/tmp/s.sock", &serde_json::json!({}))
        );
        let p = Payload::parse(br#"{"jobId":"mine","data":[1]}"#, env).unwrap();
        assert_eq!(
            (p.job_id.as_str(), &p.data),
            ("mine", &serde_json::json!([1]))
        );
    }

    #[test]
    fn pay_6_malformed_stdin_is_an_error_even_with_the_environment_set() {
        let env = |_: &str| Some("x".to_owned());
        assert_eq!(
            Payload::parse(b"{nope", env).unwrap_err().requirement,
            "PAY-6"
        );
        assert_eq!(
            Payload::parse(b"\"text\"", env).unwrap_err().requirement,
            "PAY-6"
        );
        assert!(Payload::parse(b"  \n", no_env).is_err()); // nothing anywhere
    }

    #[test]
    fn pay_6_a_payload_lacking_only_data_has_data_object() {
        let p = Payload::parse(br#"{"jobId":"j","name":"n","socketPath":"/s"}"#, no_env).unwrap();
        assert_eq!(p.data, serde_json::json!({}));
    }

    #[test]
    fn trans_1_tcp_addresses() {
        assert_eq!(
            parse_tcp("127.0.0.1:80").unwrap(),
            ("127.0.0.1".to_owned(), 80)
        );
        assert_eq!(parse_tcp("[::1]:9").unwrap(), ("::1".to_owned(), 9));
        assert_eq!(parse_tcp("localhost:65535").unwrap().1, 65535);
        for bad in ["127.0.0.1", ":80", "h:0", "h:99999", "h:+80", "h:x"] {
            assert!(parse_tcp(bad).is_err(), "{bad}");
        }
        let p = br#"{"jobId":"j","name":"n","socketPath":"tcp://nohost"}"#;
        assert_eq!(
            Payload::parse(p, no_env).unwrap_err().requirement,
            "TRANS-1"
        );
    }

    #[test]
    fn frame_2_a_lone_surrogate_in_data_is_read_as_a_replacement_character() {
        let p = br#"{"jobId":"j","name":"n","socketPath":"/s","data":{"t":"a\ud800b"}}"#;
        let p = Payload::parse(p, no_env).unwrap();
        assert_eq!(p.data["t"], "a\u{fffd}b");
    }

    #[test]
    fn msg_2_null_means_absent() {
        let p = br#"{"jobId":"j","name":"n","socketPath":"/s","checkpoint":null,"attempt":null,"features":null}"#;
        let p = Payload::parse(p, no_env).unwrap();
        assert_eq!((p.checkpoint, p.attempt, p.features.len()), (None, 1, 0));
    }

    #[test]
    fn limit_2_a_payload_too_large_is_refused() {
        let mut big = br#"{"jobId":"j","name":"n","socketPath":"/s","data":""#.to_vec();
        big.resize(MAX_PAYLOAD_BYTES + 10, b'x');
        big.extend_from_slice(b"\"}\n");
        let e = Payload::read(&big[..], no_env).unwrap_err();
        assert_eq!(e.requirement, "LIMIT-2");
    }
}
