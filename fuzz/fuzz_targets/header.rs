//! The header fixer: no panic, and the inserted fields never break lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = postern::smtp::HeaderFixer::new(
        "Sat, 28 Nov 2026 07:00:00 +0000".into(),
        "<x@relay.test>".into(),
    );
    let mut out = Vec::new();
    for chunk in data.chunks(7) {
        f.process(chunk, &mut out);
    }
    let s = f.finish(&mut out);
    assert!(s.header_len <= out.len() as u64);
});
