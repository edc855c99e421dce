//! Every refusal the listener gives goes through [`refused`]: one log line
//! with the client's address, its HELO name, the sender and recipient where
//! known, the queue id once DATA has started, the reply code and a stable
//! reason word (`reason=deny_recipients`), and one count in the daemon's
//! metrics (the session's `Services::refused`), so that the log and the counter never
//! disagree. An admin greps one client, one sender or one queue id and sees
//! everything that happened to it.
//!
//! The reason words are part of the interface (log searches, metric
//! labels): a word, once given, keeps its meaning. [`Reason`] lists them;
//! [`Answer::reason`] says which answer is a refusal and why.
//!
//! Uses `server`'s answers and reason words, `smtp` (addresses) and `queue`
//! (ids); the count goes to whatever the caller passes (the session's
//! `Services`), so this module does not reach back into the session. No
//! I/O beyond the log line.

use std::fmt;
use std::net::IpAddr;

pub use super::reason::Reason;
use super::reply::Answer;
use crate::queue::QueueId;
use crate::smtp::{Address, Reply, ReversePath, escaped};

/// Who was refused, as far as the session knows at that point.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// Its EHLO/HELO name.
    pub helo: Option<&'a str>,
    /// The sender (MAIL FROM), once given.
    pub from: Option<Sender<'a>>,
    /// The recipient the refusal is about.
    pub rcpt: Option<&'a Address>,
    /// The queue id, once DATA has started.
    pub id: Option<QueueId>,
    /// More about this one refusal (`size=… limit=…`, `user=…`), after
    /// the words in the log line.
    pub detail: Option<&'a str>,
}

impl<'a> Who<'a> {
    /// Only the client is known.
    pub fn client(client: IpAddr) -> Who<'a> {
        Who {
            client,
            helo: None,
            from: None,
            rcpt: None,
            id: None,
            detail: None,
        }
    }
}

/// A sender for the log line: `<>` for the null sender, the address
/// otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a>(pub Option<&'a Address>);

impl<'a> Sender<'a> {
    /// The sender of a reverse path.
    pub fn path(p: &'a ReversePath) -> Sender<'a> {
        Sender(p.address())
    }
}

impl fmt::Display for Sender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("<>"),
            Some(a) => write!(f, "{}", escaped(a.as_str())),
        }
    }
}

/// The one way a refusal leaves the listener: log it (one line), count it,
/// and return its reply. `answer` must be a refusal
/// ([`Answer::reason`] is `Some`); anything else is answered unlogged.
pub fn refused(count: &dyn Fn(Reason), who: &Who<'_>, answer: &Answer) -> Reply {
    let reply = answer.reply();
    let Some(reason) = answer.reason() else {
        return reply;
    };
    count(reason);
    let what = reason.describe();
    // A rule's reject names the rule: reason=filter:NAME.
    let rule_word;
    let word = match answer {
        Answer::FilterRejected { rule, .. } => {
            rule_word = format!("filter:{rule}");
            rule_word.as_str()
        }
        _ => reason.word(),
    };
    let code = reply.code;
    let client = who.client.to_canonical();
    let helo = who.helo.map(|h| tracing::field::display(escaped(h)));
    let from = who.from.map(tracing::field::display);
    let rcpt = who
        .rcpt
        .map(|r| tracing::field::display(escaped(r.as_str())));
    let id = who.id.map(tracing::field::display);
    let (open, detail, close) = match who.detail {
        Some(d) => (" (", d, ")"),
        None => ("", "", ""),
    };
    if reason.warns() {
        tracing::warn!(reason = %word, code, client = %client, helo, from, rcpt, id, "refused: {what}{open}{detail}{close}");
    } else {
        tracing::info!(reason = %word, code, client = %client, helo, from, rcpt, id, "refused: {what}{open}{detail}{close}");
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Refusal;
    use crate::smtp::CommandError;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Counting(Mutex<Vec<Reason>>);

    impl Counting {
        fn count(&self) -> impl Fn(Reason) + '_ {
            |r| self.0.lock().unwrap().push(r)
        }
    }

    #[test]
    fn a_refusal_is_counted_and_an_answer_that_is_none_is_not() {
        let c = Counting::default();
        let who = Who::client("192.0.2.1".parse().unwrap());
        let r = refused(
            &c.count(),
            &who,
            &Answer::RecipientRefused(Refusal::RecipientDenied),
        );
        assert_eq!(r.code, 550);
        let r = refused(&c.count(), &who, &Answer::Ok);
        assert_eq!(r.code, 250);
        assert_eq!(*c.0.lock().unwrap(), vec![Reason::DenyRecipients]);
    }

    #[test]
    fn every_answer_of_4xx_or_5xx_is_a_refusal_with_a_distinct_word() {
        let addr_err = crate::smtp::AddressError::Empty;
        let all = [
            Answer::TalkedFirst,
            Answer::TooManyConnections,
            Answer::TooManyFromClient(super::super::limits::Refused::TooFast),
            Answer::refused(&Refusal::ClientDenied, "192.0.2.1".parse().unwrap()),
            Answer::TooManyErrors,
            Answer::TooManyJunkCommands,
            Answer::LineTooLong,
            Answer::BadCommand(CommandError::Unrecognized),
            Answer::BadCommand(CommandError::BadSender(addr_err)),
            Answer::PipeliningWithoutEhlo,
            Answer::NeedMail,
            Answer::NotImplemented,
            Answer::PipelinedAfterStartTls,
            Answer::EncryptionRequired,
            Answer::UnknownAuthMechanism,
            Answer::AuthFailed,
            Answer::TooManyAuthFailures,
            Answer::ParamsNeedEhlo,
            Answer::MessageTooBig { limit: 1 },
            Answer::Utf8SenderNeedsSmtputf8,
            Answer::SenderRefused(Refusal::SenderNotAllowed),
            Answer::SenderNotOwned,
            Answer::RecipientRefused(Refusal::RecipientNotAllowed),
            Answer::RelayDenied,
            Answer::TooManyRecipients,
            Answer::MessageRate,
            Answer::RecipientRate,
            Answer::QueueFull,
            Answer::QueueClosed,
            Answer::QueueFailed,
            Answer::BareNewline,
            Answer::NulInData,
            Answer::TooManyHops,
            Answer::DataLineTooLong { limit: 1000 },
            Answer::HeaderTooBig { limit: 1 },
            Answer::StorageTooSlow,
            Answer::FilterRejected {
                rule: "r".into(),
                reply: "550 5.7.1 no".parse().unwrap(),
            },
        ];
        for a in &all {
            let r = a.reply();
            assert!(r.code >= 400, "{a:?}");
            let reason = a.reason().unwrap_or_else(|| panic!("{a:?} has no reason"));
            assert!(
                reason
                    .word()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{reason:?}"
            );
        }
        // Not refusals: the end of a session, a cancelled AUTH.
        for a in [Answer::Timeout, Answer::AuthCancelled, Answer::Ok] {
            assert_eq!(a.reason(), None, "{a:?}");
        }
        let mut words: Vec<&str> = all
            .iter()
            .filter_map(Answer::reason)
            .map(Reason::word)
            .collect();
        words.sort_unstable();
        let n = words.len();
        words.dedup();
        assert_eq!(n, words.len(), "a word names two reasons");
    }
}
