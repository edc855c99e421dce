//! postern: a small SMTP relay appliance for embedded Linux.
//!
//! LAN devices hand it mail over SMTP; it applies policy, keeps each accepted
//! message in a durable, flash-friendly queue and forwards it to a smarthost
//! (or writes it to a maildir-style outbox).
//!
//! # Layout
//!
//! - [`auth`]: listener AUTH accounts (Argon2id hashes).
//! - [`config`]: the TOML schema (one file per table), validation and
//!   `FILE:LINE:COL` errors.
//! - [`smtp`]: the wire grammar shared by server and client, and the one
//!   envelope type (`smtp::Envelope`) from session to queue to delivery;
//!   bytes in, values out, no sockets.
//! - [`policy`]: who may relay, from and to whom; aliases and the upstream
//!   size limit the listener advertises.
//! - [`filter`]: the `[[filter]]` rule engine (what matches, when it can
//!   decide, what it does) and storm suppression's table and digest.
//! - [`server`]: listeners and the inbound session state machine.
//! - [`queue`]: the durable store, recovery and the in-memory schedule; the
//!   only code that touches the spool directory.
//! - [`delivery`]: routing, the SMTP client, retries and failure reports.
//! - [`dns`]: hickory-resolver running on smol.
//! - [`tls`]: rustls configurations.
//! - [`deadline`]: the one `timeout` helper.
//! - [`daemon`]: wires the parts together for `postern serve`; reload and stop.
//! - [`preflight`]: what `postern check` tries on the machine: writable
//!   directories and readable files as the service user, the systemd unit's
//!   sandbox, listen addresses.
//! - [`sendmail`]: the sendmail command line; hands mail to the daemon over SMTP.
//! - [`maildrop`]: the drop directory where `sendmail` keeps a message the
//!   daemon cannot take yet, and the daemon picks it up.
//! - [`notify`]: systemd readiness and watchdog messages (`sd_notify`).
//! - [`logging`]: log lines on stderr, with journal priorities under systemd.
//! - [`status`]: the daemon's state as one snapshot, judged (ok, warning,
//!   critical), as text, JSON, Prometheus metrics and a page.
//! - [`web`]: the status listener (`/metrics`, the status page).
//! - [`observe`]: counters and route states the daemon keeps for status and metrics.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod auth;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deadline;
pub mod delivery;
pub mod dns;
pub mod filter;
pub mod logging;
pub mod maildrop;
pub mod notify;
pub mod observe;
pub mod policy;
pub mod preflight;
pub mod queue;
pub mod sendmail;
pub mod server;
pub mod smtp;
pub mod status;
pub mod tls;
pub mod web;
