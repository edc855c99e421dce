//! The DATA phase both ways: decoding what a client sends (end of data,
//! dot-unstuffing, line endings) and encoding what we send upstream
//! (canonical CRLF, dot-stuffing). Both are per-byte state machines that
//! work across arbitrary chunk boundaries.

/// What to do with a CR or LF that is not part of a CRLF pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Turn it into CRLF (Postfix ≥ 3.9's default; legacy devices send bare LF).
    #[default]
    Normalize,
    /// Refuse the message.
    Reject,
}

/// Why the data could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A bare CR or LF arrived and the mode is [`BareNewline::Reject`].
    #[error("bare CR or LF in message data")]
    BareNewline,
}

/// Progress of one [`DataDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used. Less than the input only when `finished`: the rest
    /// belongs to the commands that follow (pipelining).
    pub consumed: usize,
    /// The terminating `CRLF.CRLF` has been seen.
    pub finished: bool,
}

/// Decodes the DATA stream from a client.
///
/// End of data is recognised only as `CR LF . CR LF` (RFC 5321 §4.1.1.4),
/// where the first CRLF may be the one that ended the DATA command itself.
/// A line starting with a dot loses that dot. Bare CR and bare LF never end
/// the data; in [`BareNewline::Normalize`] mode each becomes CRLF (and `CR
/// CR LF` becomes two line breaks, never one). The output is therefore always
/// canonical CRLF text, ending with CRLF (one is added if the message's last
/// line lacked it — impossible with a correct terminator, but cheap to assure).
#[derive(Debug)]
pub struct DataDecoder {
    mode: BareNewline,
    longest_line: usize,
}

impl DataDecoder {
    /// A decoder positioned just after the `DATA` command's CRLF.
    pub fn new(mode: BareNewline) -> Self {
        DataDecoder { mode, longest_line: 0 }
    }
    /// Decode `input`, appending the message bytes to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, DataError> {
        let _ = (input, out, self.mode);
        unimplemented!("helper: smtp/data.rs")
    }
    /// Longest line seen so far, in octets without its CRLF.
    pub fn longest_line(&self) -> usize {
        self.longest_line
    }
}

/// Encodes a stored message for the wire: every line ends in CRLF (bare CR or
/// LF become CRLF), a line starting with `.` gets another, and
/// [`DotStuffer::finish`] writes the terminating `.CRLF` after making sure the
/// last line ended.
#[derive(Debug, Default)]
pub struct DotStuffer {
    _private: (),
}

impl DotStuffer {
    /// A stuffer at the start of a line.
    pub fn new() -> Self {
        DotStuffer::default()
    }
    /// Encode `input`, appending to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out);
        unimplemented!("helper: smtp/data.rs")
    }
    /// Finish the message: CRLF if the last line is open, then `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = out;
        unimplemented!("helper: smtp/data.rs")
    }
}
