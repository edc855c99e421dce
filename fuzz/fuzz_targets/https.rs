//! The token endpoint's HTTP reply reader: whatever arrives (sizes near
//! usize::MAX, broken chunking, cut anywhere), no panic, and what it returns
//! stays within the reply limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::delivery::https::{MAX_RESPONSE, parse_response};

fuzz_target!(|data: &[u8]| {
    // As the reader sees it: every prefix as it grows, then the close.
    for end in (0..=data.len()).step_by(61).chain([data.len()]) {
        if let Ok(Some(r)) = parse_response(&data[..end], false) {
            assert!(r.body.len() <= MAX_RESPONSE);
        }
    }
    if let Ok(Some(r)) = parse_response(data, true) {
        assert!(r.body.len() <= MAX_RESPONSE);
    }
});
