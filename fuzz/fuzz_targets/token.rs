//! The OAuth2 token reply (JSON): no panic, and a token that comes out is
//! usable on a command line with a lifetime a clock can add.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let status = if data.first().is_some_and(|b| b & 1 == 1) {
        200
    } else {
        400
    };
    if let Ok(t) = postern::delivery::oauth::parse_token_reply(status, data) {
        assert!(!t.access_token.is_empty());
        assert!(!t.access_token.bytes().any(|b| b < 0x20 || b == 0x7f));
        assert!(std::time::Instant::now().checked_add(t.lifetime).is_some());
    }
});
