//! The SMTP wire grammar, shared by the inbound server and the smarthost
//! client, and the one envelope type ([`Envelope`]) a message carries from
//! the session through the queue to delivery. Bytes in, values out: nothing
//! in here touches a socket, a file or policy, which is what makes it the
//! place the fuzzers point at. Uses no other module of the crate.

pub mod address;
pub mod command;
pub mod data;
pub mod envelope;
pub mod escape;
pub mod header;
pub mod longlines;
pub mod reply;
pub mod xtext;

pub use address::{Address, AddressError};
pub use command::{BodyType, Command, CommandError, MailParams, RcptParams};
pub use data::{BareNewline, DataDecoder, DataError, Decoded, DotStuffer};
pub use envelope::{Envelope, Notify, RcptIndex, Recipient, Ret, ReversePath};
pub use escape::{escaped, is_hidden};
pub use header::{HeaderFixer, HeaderSummary, Received, format_date, format_rfc3339};
pub use reply::{Capabilities, EnhancedStatus, Reply, ReplyError, ReplyParser, ReplyReader};
