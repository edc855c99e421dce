//! Log output: `tracing` events as one line each on stderr.
//!
//! Under systemd, stderr is a stream into the journal, which keeps its own
//! timestamp and a priority per line. systemd says so by setting
//! `JOURNAL_STREAM` to stderr's device and inode; then each line starts
//! with its sd-daemon priority prefix (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug) and carries no timestamp of its own, so that
//! `journalctl -u postern -p warning` shows the problems only. Anywhere
//! else the output is the usual timestamped text.
//!
//! This module owns the subscriber set-up and the filter (`RUST_LOG` or the
//! config's level). It uses no other module of the crate.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Start logging to stderr: `RUST_LOG` if set, else `level`.
pub fn init(level: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter: Targets = spec
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    // Only our own crate talks at info; rustls and hickory only when asked.
    let filter = if spec.contains('=') {
        filter
    } else {
        quiet_deps(&spec)
    };
    let journal = stderr_is_journal();
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let result = if journal {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(Journal(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ));
        registry.with(fmt).try_init()
    } else {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false);
        registry.with(fmt).try_init()
    };
    // A subscriber set already (tests) stays.
    let _ = result;
}

fn quiet_deps(spec: &str) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let level: LevelFilter = spec.parse().unwrap_or(LevelFilter::INFO);
    Targets::new()
        .with_default(LevelFilter::WARN.min(level))
        .with_target("postern", level)
}

/// Whether stderr is the journal: `JOURNAL_STREAM` is `DEVICE:INODE` of
/// the stream systemd connected, and stderr must still be that stream (a
/// program started from a service with its stderr redirected is not).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // The field types differ between targets (32-bit ARM among them).
    #[allow(clippy::useless_conversion)]
    match rustix::fs::fstat(std::io::stderr().as_fd()) {
        Ok(st) => u64::from(st.st_dev) == dev && u64::from(st.st_ino) == ino,
        Err(_) => false,
    }
}

/// The sd-daemon priority prefix of a level (sd-daemon(3)).
pub fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// An event format that puts the priority prefix in front of another's
/// line.
struct Journal<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journal<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), "<3>");
        assert_eq!(priority(&Level::WARN), "<4>");
        assert_eq!(priority(&Level::INFO), "<6>");
        assert_eq!(priority(&Level::DEBUG), "<7>");
        assert_eq!(priority(&Level::TRACE), "<7>");
    }
}
