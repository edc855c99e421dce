//! The DATA decoder: no panic; output is canonical CRLF; chunking (the
//! first byte picks the cut) never changes the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::smtp::{BareNewline, DataDecoder};

fn decode(mode: BareNewline, input: &[u8], cut: usize) -> Option<(Vec<u8>, usize, bool)> {
    let mut d = DataDecoder::new(mode);
    let mut out = Vec::new();
    let (a, b) = input.split_at(cut.min(input.len()));
    let r1 = d.decode(a, &mut out).ok()?;
    if r1.finished {
        return Some((out, r1.consumed, true));
    }
    let r2 = d.decode(b, &mut out).ok()?;
    Some((out, r1.consumed + r2.consumed, r2.finished))
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    for mode in [BareNewline::Normalize, BareNewline::Reject] {
        let whole = decode(mode, input, input.len());
        let split = decode(mode, input, cut as usize);
        assert_eq!(whole, split, "chunking changed the decoding");
        if let Some((out, _, _)) = whole {
            // No bare CR or LF ever comes out.
            for (i, &b) in out.iter().enumerate() {
                if b == b'\n' {
                    assert!(i > 0 && out[i - 1] == b'\r', "bare LF in output");
                }
                if b == b'\r' {
                    assert!(
                        out.get(i + 1).is_none_or(|&n| n == b'\n'),
                        "bare CR in output"
                    );
                }
            }
        }
    }
});
