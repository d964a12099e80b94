//! JSON text on the wire (FRAME-1, FRAME-2): encoding values, assembling
//! message lines, and repairing lone surrogate escapes in what we read.

use std::borrow::Cow;

use serde::Serialize;

use crate::error::Error;

/// Compact JSON for `value`. serde_json escapes every control character,
/// writes other characters as raw UTF-8, and a Rust string cannot hold an
/// unpaired surrogate, so the text always follows FRAME-2. Non-finite floats
/// become `null` (serde_json's rule), never `NaN` or `Infinity`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Encode(e.to_string()))
}

/// A JSON string literal for `text`.
pub(crate) fn quote(text: &str) -> String {
    // Serializing a str cannot fail.
    serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\""))
}

/// A JSON number for a percent (MSG-4): whole numbers without a fraction.
pub(crate) fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        encode(&value).unwrap_or_else(|_| String::from("0"))
    }
}

/// The fields after a message's envelope: `"k":v,"k2":v2`.
#[derive(Default)]
pub(crate) struct Fields(pub(crate) String);

impl Fields {
    pub(crate) fn raw(mut self, key: &str, value: &str) -> Self {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key); // keys are ASCII names of the spec
        self.0.push_str("\":");
        self.0.push_str(value);
        self
    }

    pub(crate) fn string(self, key: &str, value: &str) -> Self {
        let quoted = quote(value);
        self.raw(key, &quoted)
    }
}

/// The widest timestamp (2^53 - 1 has 16 digits): an unsequenced line's size
/// is known before it is stamped.
pub(crate) const MAX_TIMESTAMP_DIGITS: usize = 16;

/// Appends one message line with its newline to `out` (FRAME-1). `seq` 0
/// means unsequenced.
pub(crate) fn push_line(
    out: &mut Vec<u8>,
    kind: &str,
    job_id: &str,
    timestamp: u64,
    seq: u64,
    body: &str,
) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"jobId\":");
    out.extend_from_slice(job_id.as_bytes());
    out.extend_from_slice(b",\"timestamp\":");
    push_u64(out, timestamp);
    if seq > 0 {
        out.extend_from_slice(b",\"seq\":");
        push_u64(out, seq);
    }
    if !body.is_empty() {
        out.push(b',');
        out.extend_from_slice(body.as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The length (without its newline) an unsequenced line of `body` has at
/// most once stamped.
pub(crate) fn unstamped_len(kind: &str, job_id: &str, body: &str) -> usize {
    let mut probe = Vec::with_capacity(body.len() + 64);
    push_line(&mut probe, kind, job_id, 0, 0, body);
    probe.len() - "0\n".len() + MAX_TIMESTAMP_DIGITS
}

/// Replaces each `\uXXXX` escape of an unpaired surrogate in a JSON text with
/// `\ufffd` (U+FFFD), as FRAME-2 asks of a sender.
///
/// A payload may escape a lone surrogate (RFC 8259 allows the escape, and a
/// server in a language whose strings hold UTF-16 can produce it), but a Rust
/// `String` cannot hold one and serde_json refuses it: the worker reads such
/// text with the replacement character instead of refusing the whole job.
/// Escaped surrogate pairs and everything else are left alone.
pub(crate) fn repair_lone_surrogates(text: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < text.len() {
        if text[i] != b'\\' || i + 1 >= text.len() {
            i += 1;
            continue;
        }
        if text[i + 1] != b'u' {
            i += 2; // an escaped character, such as \\ or \"
            continue;
        }
        let unit = hex4(&text[i + 2..]);
        let lone = match unit {
            Some(0xDC00..=0xDFFF) => true,
            Some(0xD800..=0xDBFF) => {
                let low = if text.get(i + 6) == Some(&b'\\') && text.get(i + 7) == Some(&b'u') {
                    hex4(&text[i + 8..])
                } else {
                    None
                };
                if matches!(low, Some(0xDC00..=0xDFFF)) {
                    i += 12; // a pair: both halves stay
                    continue;
                }
                true
            }
            _ => false,
        };
        if lone {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
            buf.extend_from_slice(&text[copied..i]);
            buf.extend_from_slice(b"\\ufffd");
            copied = i + 6;
        }
        i += 6;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.extend_from_slice(&text[copied.min(text.len())..]);
            Cow::Owned(buf)
        }
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let digits = b.get(..4)?;
    let s = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repaired(s: &str) -> String {
        String::from_utf8(repair_lone_surrogates(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn frame_2_lone_surrogates_become_replacement_characters() {
        assert_eq!(repaired(r#""a\ud800b""#), r#""a\ufffdb""#);
        assert_eq!(repaired(r#""\udc00""#), r#""\ufffd""#);
        assert_eq!(
            repaired(r#""\ud800\ud800\udc00""#),
            r#""\ufffd\ud800\udc00""#
        );
        assert_eq!(repaired(r#""\ud800""#), r#""\ufffd""#);
        assert_eq!(repaired(r#""x\ud800"#), r#""x\ufffd"#); // cut short
    }

    #[test]
    fn frame_2_pairs_and_escaped_backslashes_are_left_alone() {
        for s in [
            r#""\ud83c\udf89""#,
            r#""\\ud800""#,
            r#""\\\\""#,
            r#""\u00e9""#,
            "\"\\u12\"",
        ] {
            assert_eq!(repaired(s), s);
            assert!(matches!(
                repair_lone_surrogates(s.as_bytes()),
                Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn frame_2_repaired_text_parses_to_the_replacement_character() {
        let text = repair_lone_surrogates(br#"{"t":"a\udfffb\ud83c\udf89"}"#);
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["t"], "a\u{fffd}b\u{1f389}");
    }

    #[test]
    fn frame_1_lines_are_one_object_and_a_newline() {
        let mut out = Vec::new();
        push_line(&mut out, "log", "\"j\"", 12, 3, r#""level":"info""#);
        assert_eq!(
            out,
            b"{\"type\":\"log\",\"jobId\":\"j\",\"timestamp\":12,\"seq\":3,\"level\":\"info\"}\n"
        );
        out.clear();
        push_line(&mut out, "heartbeat", "\"j\"", 0, 0, "");
        assert_eq!(
            out,
            b"{\"type\":\"heartbeat\",\"jobId\":\"j\",\"timestamp\":0}\n"
        );
    }

    #[test]
    fn msg_4_percent_is_a_plain_number() {
        assert_eq!(number(50.0), "50");
        assert_eq!(number(33.5), "33.5");
        assert_eq!(number(100.0 / 3.0), "33.333333333333336");
    }
}
