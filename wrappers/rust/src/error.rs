//! The errors of this crate, and [`Permanent`] for failures not worth a retry.

use std::error::Error as StdError;
use std::fmt;

/// Why a call of the job API did not queue its message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The job already sent its terminal message: nothing may follow it
    /// (LIFE-4).
    Finished,
    /// The message would be longer than the server's `maxLineBytes`
    /// (LIMIT-1); `size` is its length in bytes without the newline.
    TooLarge {
        /// The message type.
        kind: &'static str,
        /// The line's length in bytes.
        size: usize,
        /// The server's limit.
        limit: usize,
    },
    /// An argument breaks the spec, such as a percent outside 0..=100
    /// (MSG-4) or log data that is not a JSON object (MSG-6).
    InvalidArgument(String),
    /// A value could not be encoded as JSON (a map with non-string keys, a
    /// failing `Serialize` impl).
    Encode(String),
    /// The job's data does not have the shape the job code asked for.
    Data(String),
    /// The first connection could not be made within `reconnectWindowMs`
    /// (RECONNECT-6): the job code must not run.
    Unreachable(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Finished => f.write_str("the job already sent its terminal message (LIFE-4)"),
            Error::TooLarge { kind, size, limit } => write!(
                f,
                "{kind} line of {size} bytes exceeds maxLineBytes {limit} (LIMIT-1)"
            ),
            Error::InvalidArgument(why) => f.write_str(why),
            Error::Encode(why) => write!(f, "cannot encode as JSON: {why}"),
            Error::Data(why) => write!(f, "the job's data: {why}"),
            Error::Unreachable(why) => f.write_str(why),
        }
    }
}

impl StdError for Error {}

/// A missing or malformed payload (PAY-6): the text names what is wrong and
/// the requirement it breaks, on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError {
    /// The rule broken, such as `PAY-2`.
    pub requirement: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

impl PayloadError {
    pub(crate) fn new(requirement: &'static str, message: impl Into<String>) -> Self {
        PayloadError {
            requirement,
            message: message.into().replace(['\n', '\r'], " "),
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "payload: {} ({})", self.message, self.requirement)
    }
}

impl StdError for PayloadError {}

/// Wraps an error to fail the job with `retryable: false`: the server does
/// not start another attempt (MSG-8, CKPT-4).
///
/// ```
/// use extjob_worker::Permanent;
///
/// fn check(n: i64) -> Result<i64, Box<dyn std::error::Error>> {
///     if n < 0 {
///         return Err(Permanent::new("n must not be negative").into());
///     }
///     Ok(n)
/// }
/// assert!(check(-1).unwrap_err().is::<Permanent>());
/// ```
#[derive(Debug)]
pub struct Permanent(Box<dyn StdError + Send + Sync>);

impl Permanent {
    /// Marks `error` (any error, or a string) as not worth retrying.
    pub fn new(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Permanent(error.into())
    }
}

impl fmt::Display for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Permanent {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Whether `error`, or an error in its chain of sources, is [`Permanent`].
pub(crate) fn is_permanent(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<Permanent>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The text of a failed message for `error` (MSG-8: never empty).
pub(crate) fn error_text(error: &dyn StdError) -> String {
    let text = error.to_string();
    if text.is_empty() {
        String::from("error")
    } else {
        text
    }
}

/// The stack of a failed message for `error`: Rust errors carry no stack,
/// so it is the error's `Debug` form (which holds a backtrace for errors that
/// capture one, such as `anyhow`'s) and its chain of sources; `None` when
/// that would only repeat the text (a plain string error).
pub(crate) fn error_stack(error: &(dyn StdError + 'static)) -> Option<String> {
    let text = error.to_string();
    let mut stack = format!("{:?}", error);
    let mut source = error.source();
    if source.is_none() && (stack == text || stack == format!("{text:?}")) {
        return None;
    }
    while let Some(e) = source {
        stack.push_str("\ncaused by: ");
        stack.push_str(&e.to_string());
        source = e.source();
    }
    Some(stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn msg_8_stack_names_the_chain_of_sources() {
        let e = Outer(std::io::Error::new(std::io::ErrorKind::Other, "disk full"));
        let stack = error_stack(&e).unwrap();
        assert!(stack.starts_with("Outer("), "{stack}");
        assert!(stack.ends_with("caused by: disk full"), "{stack}");
    }

    #[test]
    fn msg_8_a_plain_string_error_has_no_stack_to_repeat_it() {
        let plain: Box<dyn StdError> = "cancelled".into();
        assert_eq!(error_stack(plain.as_ref()), None);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(
            error_stack(&io).as_deref(),
            Some(r#"Custom { kind: NotFound, error: "gone" }"#)
        );
    }

    #[test]
    fn ckpt_4_permanent_is_found_anywhere_in_the_chain() {
        let boxed: Box<dyn StdError> = Permanent::new("no").into();
        assert!(is_permanent(boxed.as_ref()));
        let plain: Box<dyn StdError> = "no".into();
        assert!(!is_permanent(plain.as_ref()));
        assert_eq!(error_text(&Permanent::new("")), "error");
    }

    #[test]
    fn pay_6_payload_errors_are_one_line() {
        let e = PayloadError::new("PAY-2", "a\nb\rc");
        assert_eq!(e.to_string(), "payload: a b c (PAY-2)");
    }
}
