//! A job's live events (`GET /job/{id}/events`, the WebSocket `/job/ws`): its stages, its
//! output as the program writes it, its exit and its final record, each numbered in order; and
//! what an interactive client sends the program (stdin, end of file, signals).
//!
//! Output chunks are text when they are UTF-8 (a chunk never ends inside a character: the
//! [`Utf8Chunks`] splitter holds an incomplete tail back for the next read) and base64
//! otherwise. The stream is a view: the record keeps the whole output whatever a subscriber
//! missed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One event of a job's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamEvent {
    /// The job entered a stage: `queued`, `compile`, `run`, `test` (with its name).
    #[serde(rename_all = "camelCase")]
    Stage {
        /// Position in the job's stream, from 1.
        seq: u64,
        /// The stage.
        stage: String,
        /// The test's name, for a `test` stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The program wrote to stdout.
    #[serde(rename_all = "camelCase")]
    Stdout {
        /// Position in the job's stream.
        seq: u64,
        /// The bytes, as text or base64 (see `encoding`).
        data: String,
        /// `base64` when the bytes are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    /// The program wrote to stderr.
    #[serde(rename_all = "camelCase")]
    Stderr {
        /// Position in the job's stream.
        seq: u64,
        /// The bytes, as text or base64 (see `encoding`).
        data: String,
        /// `base64` when the bytes are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    /// The program ended.
    #[serde(rename_all = "camelCase")]
    Exit {
        /// Position in the job's stream.
        seq: u64,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
        /// The verdict.
        verdict: String,
    },
    /// The final record (the last event).
    #[serde(rename_all = "camelCase")]
    Result {
        /// Position in the job's stream.
        seq: u64,
        /// The job record, as `GET /job/{id}` answers it.
        #[schema(value_type = Object)]
        record: Box<crate::JobRecord>,
    },
    /// This subscriber fell behind and missed events (the record still has all the output).
    #[serde(rename_all = "camelCase")]
    Lagged {
        /// Position in the job's stream of the first event after the gap.
        seq: u64,
        /// Events missed.
        missed: u64,
    },
}

impl StreamEvent {
    /// Its position in the stream.
    pub fn seq(&self) -> u64 {
        match self {
            StreamEvent::Stage { seq, .. }
            | StreamEvent::Stdout { seq, .. }
            | StreamEvent::Stderr { seq, .. }
            | StreamEvent::Exit { seq, .. }
            | StreamEvent::Result { seq, .. }
            | StreamEvent::Lagged { seq, .. } => *seq,
        }
    }

    /// Its kind, as SSE's `event:` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamEvent::Stage { .. } => "stage",
            StreamEvent::Stdout { .. } => "stdout",
            StreamEvent::Stderr { .. } => "stderr",
            StreamEvent::Exit { .. } => "exit",
            StreamEvent::Result { .. } => "result",
            StreamEvent::Lagged { .. } => "lagged",
        }
    }

    /// Bytes of output it carries (for the replay buffer's bound).
    pub fn weight(&self) -> usize {
        match self {
            StreamEvent::Stdout { data, .. } | StreamEvent::Stderr { data, .. } => data.len() + 32,
            _ => 64,
        }
    }

    /// An output event of `bytes`: text when they are UTF-8, else base64.
    pub fn output(stderr: bool, seq: u64, bytes: &[u8]) -> Self {
        let (data, encoding) = match std::str::from_utf8(bytes) {
            Ok(t) => (t.to_string(), None),
            Err(_) => (
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
                Some("base64".to_string()),
            ),
        };
        if stderr {
            StreamEvent::Stderr { seq, data, encoding }
        } else {
            StreamEvent::Stdout { seq, data, encoding }
        }
    }

    /// Whether it is the last event of its job.
    pub fn is_last(&self) -> bool {
        matches!(self, StreamEvent::Result { .. })
    }
}

/// What an interactive client sends a running program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamInput {
    /// Bytes for its stdin.
    Stdin {
        /// The bytes (text).
        data: String,
    },
    /// Close its stdin.
    Eof,
    /// Deliver a signal: `SIGINT`, `SIGTERM`, `SIGKILL`, `SIGHUP`, `SIGQUIT`, `SIGUSR1`,
    /// `SIGUSR2` (or the number).
    Signal {
        /// The signal's name or number.
        signal: String,
    },
}

/// The signal number of `name` (`SIGINT`, `INT`, `2`), when a client may send it.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    let num = match n {
        "HUP" | "1" => 1,
        "INT" | "2" => 2,
        "QUIT" | "3" => 3,
        "KILL" | "9" => 9,
        "USR1" | "10" => 10,
        "USR2" | "12" => 12,
        "TERM" | "15" => 15,
        _ => return None,
    };
    Some(num)
}

/// Splits a byte stream into chunks that never end inside a UTF-8 character: an incomplete
/// sequence at the end of a read waits for the next one (bytes that can never be UTF-8 go
/// out as they are, and their chunk is base64).
#[derive(Debug, Default)]
pub struct Utf8Chunks {
    held: Vec<u8>,
}

impl Utf8Chunks {
    /// The chunk to emit after reading `bytes` (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(bytes);
        if let Err(e) = std::str::from_utf8(&all)
            && e.error_len().is_none()
            && all.len() - e.valid_up_to() < 4
        {
            // The tail is the start of a character whose other bytes are still to come.
            self.held = all.split_off(e.valid_up_to());
        }
        all
    }

    /// What is held back, at end of file.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_reads_stays_whole() {
        let text = "añ€😀";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut c = Utf8Chunks::default();
            let mut a = c.push(&bytes[..cut]);
            let b = c.push(&bytes[cut..]);
            assert!(std::str::from_utf8(&a).is_ok(), "cut {cut}");
            assert!(std::str::from_utf8(&b).is_ok(), "cut {cut}");
            a.extend(b);
            a.extend(c.finish());
            assert_eq!(a, bytes);
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_go_out_as_base64() {
        let mut c = Utf8Chunks::default();
        let out = c.push(&[0xff, 0xfe, b'x']);
        assert_eq!(out, [0xff, 0xfe, b'x']);
        let e = StreamEvent::output(false, 3, &out);
        assert_eq!(
            e,
            StreamEvent::Stdout {
                seq: 3,
                data: "//54".into(),
                encoding: Some("base64".into())
            }
        );
        // An incomplete sequence at the very end is held; at end of file it goes out.
        assert!(c.push(&[0xe2, 0x82]).is_empty());
        assert_eq!(c.finish(), [0xe2, 0x82]);
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("SIGINT"), Some(2));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGSTOP"), None);
        assert_eq!(signal_number("SIGSEGV"), None);
    }
}
