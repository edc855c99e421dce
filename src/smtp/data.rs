//! The DATA phase both ways: decoding what a client sends (end of data,
//! dot-unstuffing, line endings) and encoding what we send upstream
//! (canonical CRLF, dot-stuffing). Both are per-byte state machines that
//! work across arbitrary chunk boundaries.

/// What to do with a CR or LF that is not part of a CRLF pair, and with a
/// NUL: a next hop that strips NULs would read `CRLF NUL . CRLF` as the end
/// of data, so a NUL is as much a framing hazard as a bare newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Turn a bare CR or LF into CRLF (Postfix ≥ 3.9's default; legacy
    /// devices send bare LF) and drop NULs.
    #[default]
    Normalize,
    /// Refuse the message.
    Reject,
}

/// Why the data could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A bare CR or LF arrived and the mode is [`BareNewline::Reject`].
    #[error("bare CR or LF in message data")]
    BareNewline,
    /// A NUL arrived and the mode is [`BareNewline::Reject`].
    #[error("NUL in message data")]
    Nul,
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
///
/// A line that follows a bare CR or LF is still a line: a leading dot is
/// removed from it as from any other, but a lone `.` there never ends the
/// data (`LF . CR LF` is the SMTP smuggling vector). A CR is held back until
/// the next byte shows whether it was bare, so chunk boundaries never change
/// the output.
///
/// A NUL is dropped in [`BareNewline::Normalize`] mode, but still counts as
/// line content: `CRLF NUL . CRLF` stays a line holding a dot (stored as
/// `.`, and dot-stuffed again on the way out), never the end of data.
///
/// In [`BareNewline::Reject`] mode the first bare CR or LF or NUL is an
/// error, and the decoder stays failed; the client's framing cannot be trusted after it,
/// so the caller should answer and close the connection rather than look for
/// the end of data. Bytes already appended to `out` belong to a refused
/// message.
#[derive(Debug)]
pub struct DataDecoder {
    mode: BareNewline,
    longest_line: usize,
    /// Octets of the current output line so far (after unstuffing).
    line_len: usize,
    state: DecodeState,
}

/// Where the decoder is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// At the start of a line. `after_crlf`: the previous line ended in a
    /// real CRLF (or this is the first line), so a lone `.` here can be the
    /// end of data.
    LineStart { after_crlf: bool },
    /// A leading dot was read and dropped.
    Dot { after_crlf: bool },
    /// `CRLF . CR` so far: LF ends the data.
    DotCr,
    /// Inside a line.
    InLine,
    /// A CR whose meaning the next byte decides.
    Cr,
    /// The terminator has been read.
    Finished,
    /// A bare newline or a NUL was refused in reject mode.
    Failed(DataError),
}

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

impl DataDecoder {
    /// A decoder positioned just after the `DATA` command's CRLF.
    pub fn new(mode: BareNewline) -> Self {
        DataDecoder {
            mode,
            longest_line: 0,
            line_len: 0,
            state: DecodeState::LineStart { after_crlf: true },
        }
    }
    /// Decode `input`, appending the message bytes to `out`.
    ///
    /// Once `finished` is reported, later calls consume nothing and report
    /// `finished` again.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, DataError> {
        let mut rest = input;
        loop {
            match self.state {
                DecodeState::Finished => break,
                DecodeState::Failed(e) => return Err(e),
                DecodeState::InLine => {
                    // Most bytes are line content: find the next CR, LF or
                    // NUL with memchr (word-at-a-time/SIMD, ~0.1 instruction
                    // a byte on long lines) and copy the run in one go.
                    // Every CR, LF and NUL still goes through `byte`, so the
                    // smuggling rules are unchanged.
                    let run = memchr::memchr3(CR, LF, NUL, rest).unwrap_or(rest.len());
                    let (text, tail) = rest.split_at(run);
                    out.extend_from_slice(text);
                    self.line_len = self.line_len.saturating_add(run);
                    rest = tail;
                }
                _ => {}
            }
            let Some((&b, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            self.byte(b, out)?;
        }
        Ok(Decoded {
            consumed: input.len() - rest.len(),
            finished: self.state == DecodeState::Finished,
        })
    }
    /// Longest line seen so far, in octets without its CRLF (after
    /// dot-unstuffing, i.e. as the line is stored).
    pub fn longest_line(&self) -> usize {
        self.longest_line
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), DataError> {
        loop {
            match self.state {
                DecodeState::LineStart { after_crlf } => {
                    match b {
                        b'.' => self.state = DecodeState::Dot { after_crlf },
                        CR => self.state = DecodeState::Cr,
                        LF => self.bare_newline(out)?,
                        NUL => self.nul()?,
                        _ => self.text(b, out),
                    }
                    return Ok(());
                }
                DecodeState::Dot { after_crlf } => {
                    match b {
                        CR if after_crlf => self.state = DecodeState::DotCr,
                        CR => self.state = DecodeState::Cr,
                        LF => self.bare_newline(out)?,
                        NUL => self.nul()?,
                        _ => self.text(b, out),
                    }
                    return Ok(());
                }
                DecodeState::InLine => {
                    match b {
                        CR => self.state = DecodeState::Cr,
                        LF => self.bare_newline(out)?,
                        NUL => self.nul()?,
                        _ => self.text(b, out),
                    }
                    return Ok(());
                }
                DecodeState::Cr | DecodeState::DotCr => {
                    if b == LF {
                        if self.state == DecodeState::DotCr {
                            // The CRLF before the dot was already written: it
                            // ends the message's last line.
                            self.state = DecodeState::Finished;
                        } else {
                            self.end_line(out);
                            self.state = DecodeState::LineStart { after_crlf: true };
                        }
                        return Ok(());
                    }
                    // The CR we held was bare. It ends its line; `b` starts
                    // the next one, so go round again. A CR CR LF is thus two
                    // line breaks, never folded into one.
                    self.bare_newline(out)?;
                }
                DecodeState::Finished | DecodeState::Failed(_) => return Ok(()),
            }
        }
    }

    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        out.push(b);
        self.line_len = self.line_len.saturating_add(1);
        self.state = DecodeState::InLine;
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.longest_line = self.longest_line.max(self.line_len);
        self.line_len = 0;
    }

    fn bare_newline(&mut self, out: &mut Vec<u8>) -> Result<(), DataError> {
        match self.mode {
            BareNewline::Normalize => {
                self.end_line(out);
                self.state = DecodeState::LineStart { after_crlf: false };
                Ok(())
            }
            BareNewline::Reject => {
                self.state = DecodeState::Failed(DataError::BareNewline);
                Err(DataError::BareNewline)
            }
        }
    }

    /// A NUL: dropped, but the line has content now (a dot after it is
    /// text, not a line-leading dot), or refused.
    fn nul(&mut self) -> Result<(), DataError> {
        match self.mode {
            BareNewline::Normalize => {
                self.state = DecodeState::InLine;
                Ok(())
            }
            BareNewline::Reject => {
                self.state = DecodeState::Failed(DataError::Nul);
                Err(DataError::Nul)
            }
        }
    }
}

/// Encodes a stored message for the wire: every line ends in CRLF (bare CR or
/// LF become CRLF), a line starting with `.` gets another, and
/// [`DotStuffer::finish`] writes the terminating `.CRLF` after making sure the
/// last line ended.
#[derive(Debug, Default)]
pub struct DotStuffer {
    state: StuffState,
}

/// Where the stuffer is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum StuffState {
    /// At the start of a line (or of the message).
    #[default]
    LineStart,
    /// Inside a line that has content.
    InLine,
    /// A CR was read; the next byte says whether it was bare. Nothing has
    /// been written for it yet.
    Cr,
}

impl DotStuffer {
    /// A stuffer at the start of a line.
    pub fn new() -> Self {
        DotStuffer::default()
    }
    /// Encode `input`, appending to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        while let Some((&b, tail)) = rest.split_first() {
            if self.state == StuffState::InLine && b != CR && b != LF {
                // Copy the rest of the line's content in one go; memchr
                // scans a word or vector at a time (this loop was a
                // tenth of the CPU relaying 1 MiB messages byte by byte).
                let run = memchr::memchr2(CR, LF, rest).unwrap_or(rest.len());
                let (text, tail) = rest.split_at(run);
                out.extend_from_slice(text);
                rest = tail;
                continue;
            }
            rest = tail;
            if self.state == StuffState::Cr {
                out.extend_from_slice(b"\r\n");
                self.state = StuffState::LineStart;
                if b == LF {
                    continue;
                }
                // A bare CR ended its line; `b` starts the next.
            }
            match b {
                CR => self.state = StuffState::Cr,
                LF => {
                    out.extend_from_slice(b"\r\n");
                    self.state = StuffState::LineStart;
                }
                b'.' if self.state == StuffState::LineStart => {
                    out.extend_from_slice(b"..");
                    self.state = StuffState::InLine;
                }
                _ => {
                    out.push(b);
                    self.state = StuffState::InLine;
                }
            }
        }
    }
    /// Finish the message: CRLF if the last line is open, then `.CRLF`.
    /// The stuffer is then ready for another message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state != StuffState::LineStart {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.state = StuffState::LineStart;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the decoder produced, what it consumed in total, whether it
    /// finished, and the longest line; `input` is fed in the given chunks.
    fn decode_chunks(
        mode: BareNewline,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, usize, bool, usize), DataError> {
        let mut d = DataDecoder::new(mode);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut finished = false;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let r = d.decode(&input[start..end], &mut out)?;
            consumed += r.consumed;
            if r.finished {
                finished = true;
                break;
            }
            assert_eq!(
                r.consumed,
                end - start,
                "unfinished decode must take all input"
            );
            start = end;
        }
        Ok((out, consumed, finished, d.longest_line()))
    }

    fn decode_all(
        mode: BareNewline,
        input: &[u8],
    ) -> Result<(Vec<u8>, usize, bool, usize), DataError> {
        decode_chunks(mode, input, &[])
    }

    fn normalize(input: &[u8]) -> Result<(Vec<u8>, usize, bool, usize), DataError> {
        decode_all(BareNewline::Normalize, input)
    }

    fn stuff(x: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.encode(x, &mut out);
        s.finish(&mut out);
        out
    }

    /// Reference for "x with every bare CR or LF turned into CRLF, and its
    /// last line closed": the obvious, non-streaming way.
    fn canonical(x: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < x.len() {
            match x[i] {
                b'\r' if x.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// xorshift64: deterministic, no crate needed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// Bytes from an alphabet rich in the characters that matter here.
        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            const ALPHABET: &[u8] = b"..\r\r\n\nab \0\xff";
            let len = self.below(max_len + 1);
            (0..len)
                .map(|_| ALPHABET[self.below(ALPHABET.len())])
                .collect()
        }
        fn cuts(&mut self, len: usize) -> Vec<usize> {
            let mut cuts: Vec<usize> = (0..self.below(6)).map(|_| self.below(len + 1)).collect();
            cuts.sort_unstable();
            cuts
        }
    }

    #[test]
    fn plain_message_ends_at_crlf_dot_crlf() {
        let input = b"Subject: hi\r\n\r\nbody\r\n.\r\n";
        let (out, consumed, finished, longest) = normalize(input).unwrap();
        assert_eq!(out, b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(consumed, input.len());
        assert!(finished);
        assert_eq!(longest, 11);
    }

    #[test]
    fn dot_line_first_ends_an_empty_message() {
        assert_eq!(normalize(b".\r\n").unwrap(), (vec![], 3, true, 0));
    }

    #[test]
    fn incomplete_data_is_not_finished() {
        let (out, consumed, finished, _) = normalize(b"body\r\n.\r").unwrap();
        assert!(!finished);
        assert_eq!(consumed, 8);
        assert_eq!(out, b"body\r\n");
    }

    #[test]
    fn leading_dot_is_removed_once() {
        let (out, ..) = normalize(b"..a\r\n.b\r\n...\r\n..\r\n.\r\n").unwrap();
        assert_eq!(out, b".a\r\nb\r\n..\r\n.\r\n");
        // Dots elsewhere in a line are content.
        let (out, ..) = normalize(b"a.\r\na..b\r\n.\r\n").unwrap();
        assert_eq!(out, b"a.\r\na..b\r\n");
    }

    #[test]
    fn commands_after_the_terminator_are_left_alone() {
        let input = b"x\r\n.\r\nQUIT\r\n";
        let (out, consumed, finished, _) = normalize(input).unwrap();
        assert!(finished);
        assert_eq!(&input[consumed..], b"QUIT\r\n");
        assert_eq!(out, b"x\r\n");
        // A finished decoder takes nothing more.
        let mut d = DataDecoder::new(BareNewline::Normalize);
        let mut out = Vec::new();
        d.decode(b".\r\n", &mut out).unwrap();
        let r = d.decode(b"MAIL FROM:<a@b>\r\n", &mut out).unwrap();
        assert_eq!(
            r,
            Decoded {
                consumed: 0,
                finished: true
            }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn terminator_split_at_every_position() {
        let input = b"line one\r\n..two\r\n.\r\nRSET\r\n";
        let whole = normalize(input).unwrap();
        assert_eq!(whole.0, b"line one\r\n.two\r\n");
        for cut in 0..=input.len() {
            assert_eq!(
                decode_chunks(BareNewline::Normalize, input, &[cut]).unwrap(),
                whole,
                "cut at {cut}"
            );
            for cut2 in cut..=input.len() {
                assert_eq!(
                    decode_chunks(BareNewline::Normalize, input, &[cut, cut2]).unwrap(),
                    whole,
                    "cuts at {cut}, {cut2}"
                );
            }
        }
    }

    #[test]
    fn bare_lf_and_bare_cr_become_crlf() {
        let (out, ..) = normalize(b"a\nb\rc\r\n.\r\n").unwrap();
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn cr_cr_lf_is_two_line_breaks() {
        let (out, ..) = normalize(b"a\r\r\nb\r\n.\r\n").unwrap();
        assert_eq!(out, b"a\r\n\r\nb\r\n");
        let (out, ..) = normalize(b"a\r\r\r\nb\r\n.\r\n").unwrap();
        assert_eq!(out, b"a\r\n\r\n\r\nb\r\n");
    }

    #[test]
    fn cr_at_a_chunk_boundary_is_held_not_guessed() {
        let mut d = DataDecoder::new(BareNewline::Normalize);
        let mut out = Vec::new();
        d.decode(b"a\r", &mut out).unwrap();
        assert_eq!(
            out, b"a",
            "nothing written for the CR until its meaning is known"
        );
        d.decode(b"\n", &mut out).unwrap();
        assert_eq!(out, b"a\r\n");

        let mut d = DataDecoder::new(BareNewline::Normalize);
        let mut out = Vec::new();
        d.decode(b"a\r", &mut out).unwrap();
        d.decode(b"b", &mut out).unwrap();
        assert_eq!(out, b"a\r\nb");
    }

    #[test]
    fn reject_mode_refuses_the_first_bare_newline() {
        for input in [
            &b"a\nb\r\n.\r\n"[..],
            b"a\rb\r\n.\r\n",
            b"a\r\r\n.\r\n",
            b"\n.\r\n",
        ] {
            assert_eq!(
                decode_all(BareNewline::Reject, input),
                Err(DataError::BareNewline),
                "{input:?}"
            );
        }
        // CRLF split over two calls is not bare.
        let mut d = DataDecoder::new(BareNewline::Reject);
        let mut out = Vec::new();
        d.decode(b"a\r", &mut out).unwrap();
        let r = d.decode(b"\n.\r\n", &mut out).unwrap();
        assert!(r.finished);
        assert_eq!(out, b"a\r\n");
        // The failure sticks.
        let mut d = DataDecoder::new(BareNewline::Reject);
        let mut out = Vec::new();
        assert_eq!(d.decode(b"a\nb", &mut out), Err(DataError::BareNewline));
        assert_eq!(
            d.decode(b"\r\n.\r\n", &mut out),
            Err(DataError::BareNewline)
        );
        // A CR held at the end of a chunk is judged when the next byte comes.
        let mut d = DataDecoder::new(BareNewline::Reject);
        assert!(d.decode(b"a\r", &mut out).is_ok());
        assert_eq!(d.decode(b"b", &mut out), Err(DataError::BareNewline));
    }

    #[test]
    fn longest_line_counts_octets_without_crlf_after_unstuffing() {
        let (_, _, _, longest) = normalize(b"12345\r\n..678\r\n1\n.\r\n").unwrap();
        assert_eq!(longest, 5);
        let (_, _, _, longest) = normalize(b"1234567\r\n.\r\n").unwrap();
        assert_eq!(longest, 7);
        let long = [b"x".repeat(5000), b"\r\n.\r\n".to_vec()].concat();
        let chunks: Vec<usize> = (1..50).map(|i| i * 100).collect();
        let (_, _, _, longest) = decode_chunks(BareNewline::Normalize, &long, &chunks).unwrap();
        assert_eq!(longest, 5000);
    }

    /// The vectors from the SMTP smuggling research (SEC Consult; smtpsmug;
    /// the Postfix CR CR LF follow-up): none may end the data.
    const SMUGGLING: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\r\n.\r\r\n",
        b"\r\n.\r\r\r\n",
        b"\r\n\x00.\r\n",
        b"\r\n.\x00\r\n",
        b"\r\n \r\n.\n",
        b"\n\n.\n\n",
    ];

    fn smuggling_message(vector: &[u8]) -> Vec<u8> {
        [
            &b"From: a@lan\r\nSubject: real\r\n\r\nhello"[..],
            vector,
            b"MAIL FROM:<ceo@victim.example>\r\nRCPT TO:<x@y>\r\nDATA\r\nFrom: ceo\r\n\r\nsmuggled",
            b"\r\n.\r\n",
            b"QUIT\r\n",
        ]
        .concat()
    }

    #[test]
    fn smuggling_vectors_stay_inside_one_message() {
        let mut rng = Rng(0x5eed_0000_0000_0001);
        for vector in SMUGGLING {
            let input = smuggling_message(vector);
            let end = input.len() - b"QUIT\r\n".len();
            let whole = normalize(&input).unwrap();
            let (out, consumed, finished, _) = &whole;
            assert!(*finished, "{vector:?}");
            assert_eq!(*consumed, end, "{vector:?}: ended early or late");
            let text = String::from_utf8_lossy(out);
            assert!(
                text.contains("MAIL FROM:<ceo@victim.example>"),
                "{vector:?}"
            );
            assert!(text.ends_with("smuggled\r\n"), "{vector:?}");
            assert_eq!(canonical(out), *out, "{vector:?}: output not canonical");
            for cut in 0..=input.len() {
                assert_eq!(
                    decode_chunks(BareNewline::Normalize, &input, &[cut]).unwrap(),
                    whole
                );
            }
            for _ in 0..50 {
                let cuts = rng.cuts(input.len());
                assert_eq!(
                    decode_chunks(BareNewline::Normalize, &input, &cuts).unwrap(),
                    whole
                );
            }
        }
    }

    #[test]
    fn smuggling_vectors_with_bare_newlines_are_refused_in_reject_mode() {
        for vector in SMUGGLING {
            let input = smuggling_message(vector);
            let bare = vector.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
                || vector.windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n')
                || vector.first() == Some(&b'\n')
                || vector.last() == Some(&b'\r');
            let got = decode_all(BareNewline::Reject, &input);
            if bare {
                assert_eq!(got, Err(DataError::BareNewline), "{vector:?}");
            } else if vector.contains(&0) {
                assert_eq!(got, Err(DataError::Nul), "{vector:?}");
            } else {
                let (_, consumed, finished, _) = got.unwrap();
                assert!(finished);
                assert_eq!(consumed, input.len() - b"QUIT\r\n".len(), "{vector:?}");
            }
        }
    }

    #[test]
    fn nul_is_refused_in_reject_mode_and_dropped_in_normalize_mode() {
        // A next hop that strips NULs would see CRLF . CRLF here.
        let input = b"Subject: t\r\n\r\na\r\n\x00.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n";
        assert_eq!(decode_all(BareNewline::Reject, input), Err(DataError::Nul));
        let (out, consumed, finished, _) = normalize(input).unwrap();
        assert!(finished);
        assert_eq!(&input[consumed..], b"QUIT\r\n");
        // The dot stays a line of its own, inside the message; stuffed
        // again on the way out, it cannot end the data there either.
        assert_eq!(out, b"Subject: t\r\n\r\na\r\n.\r\nMAIL FROM:<x@y>\r\n");
        assert_eq!(
            stuff(&out),
            b"Subject: t\r\n\r\na\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n"
        );
        // Anywhere in a line, and the failure sticks.
        let (out, ..) = normalize(b"a\x00b\x00\r\n.\x00\r\n.\r\n").unwrap();
        assert_eq!(out, b"ab\r\n\r\n");
        let mut d = DataDecoder::new(BareNewline::Reject);
        let mut out = Vec::new();
        assert_eq!(d.decode(b"abc\x00", &mut out), Err(DataError::Nul));
        assert_eq!(d.decode(b"\r\n.\r\n", &mut out), Err(DataError::Nul));
    }

    #[test]
    fn cr_cr_lf_dot_crlf_does_end_the_data() {
        // Its last five octets are a genuine CRLF . CRLF; every conforming
        // receiver ends here, and so must we (ending later would itself be a
        // disagreement between hops). The bare CR before them becomes a line
        // break of its own.
        let input = b"a\r\r\n.\r\nQUIT\r\n";
        let (out, consumed, finished, _) = normalize(input).unwrap();
        assert!(finished);
        assert_eq!(&input[consumed..], b"QUIT\r\n");
        assert_eq!(out, b"a\r\n\r\n");
    }

    #[test]
    fn lines_after_a_bare_newline_are_unstuffed_but_never_terminate() {
        let (out, _, finished, _) = normalize(b"a\n..b\n.\r\n").unwrap();
        assert!(!finished);
        assert_eq!(out, b"a\r\n.b\r\n\r\n");
    }

    #[test]
    fn stuffer_stuffs_normalizes_and_terminates() {
        assert_eq!(stuff(b""), b".\r\n");
        assert_eq!(stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(stuff(b"."), b"..\r\n.\r\n");
        assert_eq!(
            stuff(b".a\n..\rb.\r\n.\r"),
            b"..a\r\n...\r\nb.\r\n..\r\n.\r\n"
        );
        assert_eq!(stuff(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(stuff(b"a\n\n"), b"a\r\n\r\n.\r\n");
    }

    #[test]
    fn stuffer_holds_a_cr_across_chunks_and_is_reusable() {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.encode(b"a\r", &mut out);
        assert_eq!(out, b"a");
        s.encode(b"\n.", &mut out);
        s.encode(b"\r", &mut out);
        s.encode(b"x", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n..\r\nx\r\n.\r\n");
        // After finish, a new message starts at a line start.
        out.clear();
        s.encode(b".b", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"..b\r\n.\r\n");
    }

    /// Stuffer output is canonical: CR only before LF, LF only after CR.
    fn assert_canonical_wire(wire: &[u8]) {
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i} in {wire:?}");
            }
            if b == b'\n' {
                assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i} in {wire:?}");
            }
        }
    }

    #[test]
    fn property_decode_of_stuffed_is_canonical_input() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for round in 0..3000 {
            let x = rng.bytes(if round < 2000 { 24 } else { 300 });
            // NULs are dropped in normalize mode and refused in reject mode.
            let expected: Vec<u8> = canonical(&x).into_iter().filter(|&b| b != 0).collect();

            // Stuffing in random chunks gives the same wire bytes.
            let wire = stuff(&x);
            let mut s = DotStuffer::new();
            let mut chunked = Vec::new();
            let mut start = 0;
            for end in rng.cuts(x.len()).into_iter().chain([x.len()]) {
                s.encode(&x[start..end], &mut chunked);
                start = end;
            }
            s.finish(&mut chunked);
            assert_eq!(chunked, wire, "stuffing {x:?} in chunks");
            assert_canonical_wire(&wire);

            // The wire form decodes back to the canonical input, in both modes
            // (it has no bare newline), and nothing after it is taken.
            let input = [&wire[..], b"NOOP\r\n"].concat();
            for mode in [BareNewline::Normalize, BareNewline::Reject] {
                if mode == BareNewline::Reject && x.contains(&0) {
                    assert_eq!(decode_all(mode, &input), Err(DataError::Nul), "{x:?}");
                    continue;
                }
                let whole = decode_all(mode, &input).unwrap();
                assert_eq!(whole.0, expected, "decode(stuff({x:?}))");
                assert_eq!(whole.1, wire.len());
                assert!(whole.2);
                if x.len() <= 24 {
                    for cut in 0..=input.len() {
                        assert_eq!(decode_chunks(mode, &input, &[cut]).unwrap(), whole);
                    }
                }
                for _ in 0..4 {
                    let cuts = rng.cuts(input.len());
                    assert_eq!(decode_chunks(mode, &input, &cuts).unwrap(), whole);
                }
            }
        }
    }

    #[test]
    fn property_chunking_never_changes_the_decoding_of_raw_input() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for _ in 0..3000 {
            // Raw client bytes: anything, sometimes with a terminator in it.
            let mut input = rng.bytes(60);
            if rng.below(2) == 0 {
                let at = rng.below(input.len() + 1);
                input.splice(at..at, b"\r\n.\r\n".iter().copied());
            }
            for mode in [BareNewline::Normalize, BareNewline::Reject] {
                let whole = decode_all(mode, &input);
                if let Ok((out, _, finished, _)) = &whole {
                    // Unfinished output may end inside a line, but never
                    // holds a bare CR or LF.
                    assert_canonical_wire(out);
                    if *finished {
                        assert!(out.is_empty() || out.ends_with(b"\r\n"));
                    }
                }
                for cut in 0..=input.len() {
                    assert_eq!(
                        decode_chunks(mode, &input, &[cut]),
                        whole,
                        "{input:?} cut at {cut}"
                    );
                }
                for _ in 0..4 {
                    let cuts = rng.cuts(input.len());
                    assert_eq!(
                        decode_chunks(mode, &input, &cuts),
                        whole,
                        "{input:?} cuts {cuts:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn long_runs_decode_the_same_in_any_chunking_as_byte_by_byte() {
        // The memchr fast path copies whole runs of text; feeding one byte
        // per call never takes it. Both must agree on long, mostly-text
        // input with the smuggling characters sprinkled in.
        let mut rng = Rng(0x5eed_cafe_f00d_0001);
        for _ in 0..200 {
            let mut input = Vec::new();
            for _ in 0..rng.below(12) {
                let run = rng.below(3000);
                input.extend((0..run).map(|i| b'a' + (i % 26) as u8));
                input.extend(rng.bytes(4));
            }
            if rng.below(2) == 0 {
                input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            }
            for mode in [BareNewline::Normalize, BareNewline::Reject] {
                let cuts: Vec<usize> = (1..input.len()).collect();
                let bytewise = decode_chunks(mode, &input, &cuts);
                assert_eq!(decode_all(mode, &input), bytewise);
                for _ in 0..4 {
                    let cuts = rng.cuts(input.len());
                    assert_eq!(
                        decode_chunks(mode, &input, &cuts),
                        bytewise,
                        "cuts {cuts:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn property_only_a_real_crlf_dot_crlf_finishes() {
        // Reference: the first CRLF . CRLF in "\r\n" + input, found the dumb way.
        let mut rng = Rng(0xfeed_face_0bad_f00d);
        for _ in 0..5000 {
            let input = rng.bytes(40);
            let framed = [&b"\r\n"[..], &input].concat();
            let expected_end = framed
                .windows(5)
                .position(|w| w == b"\r\n.\r\n")
                .map(|p| p + 5 - 2);
            let (_, consumed, finished, _) = normalize(&input).unwrap();
            match expected_end {
                Some(end) => {
                    assert!(finished, "{input:?}");
                    assert_eq!(consumed, end, "{input:?}");
                }
                None => assert!(!finished, "{input:?} finished without CRLF.CRLF"),
            }
        }
    }
}
