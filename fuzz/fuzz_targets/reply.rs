//! The upstream reply parser, fed line by line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut p = postern::smtp::ReplyParser::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if p.push_line(line).is_err() {
            p = postern::smtp::ReplyParser::new();
        }
    }
});
