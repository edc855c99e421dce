//! The upstream reply parser, fed line by line (strict), and the lenient
//! reader the client uses, fed the same bytes in uneven pieces: no panic,
//! and what the reader keeps stays bounded however long the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::smtp::reply::{MAX_REPLY_LINE, MAX_REPLY_LINES};

fuzz_target!(|data: &[u8]| {
    let mut p = postern::smtp::ReplyParser::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if p.push_line(line).is_err() {
            p = postern::smtp::ReplyParser::new();
        }
    }
    let mut r = postern::smtp::ReplyReader::new();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut pending: Vec<u8> = Vec::new();
    for piece in data.chunks(step) {
        pending.extend_from_slice(piece);
        loop {
            let (used, got) = r.feed(&pending);
            assert!(used <= pending.len());
            pending.drain(..used);
            match got {
                Some(Ok(reply)) => {
                    assert!((200..600).contains(&reply.code));
                    assert!(reply.lines.len() <= MAX_REPLY_LINES);
                    assert!(reply.lines.iter().all(|l| l.len() <= 3 * MAX_REPLY_LINE));
                }
                Some(Err(_)) => {}
                None => break,
            }
        }
        assert!(pending.is_empty());
    }
});
