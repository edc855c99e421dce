//! The config parser: any text gives a config or FILE:LINE:COL errors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let opts = postern::config::ParseOptions {
            skip_file_checks: true,
            default_hostname: Some("relay.test".into()),
        };
        let _ = postern::config::parse_with(text, std::path::Path::new("f.toml"), &opts);
    }
});
