//! Integration tests: the real `postern` binary over loopback sockets.
//! One test binary (modules below) so the crate links once.

mod cli;
mod inbound;
mod outbound;
mod relay;
mod util;
