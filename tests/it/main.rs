//! Integration tests: the real `postern` binary over loopback sockets.
//! One test binary (modules below) so the crate links once.

mod board;
mod cli;
mod dsn;
mod inbound;
mod outbound;
mod queue;
mod refusals;
mod relay;
mod sendmail;
mod status;
mod storm;
mod util;
mod web;
