//! The command-line parser: any bytes give a command or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() <= postern::smtp::command::MAX_COMMAND_LINE {
        let _ = postern::smtp::command::parse(data);
    }
});
