//! The envelope of one message: who sent it, to whom, and with which
//! parameters (RFC 5321 MAIL/RCPT, RFC 6152 `BODY=`, RFC 6531 `SMTPUTF8`,
//! RFC 3461 `RET`/`ENVID`/`NOTIFY`/`ORCPT`).
//!
//! One type travels the whole way: the session builds it from the addresses
//! it parsed, the queue stores it, delivery reads it. Nothing downstream
//! parses an address again or looks for an `@`: domains come from
//! [`Address`]. Values only, no I/O; uses nothing outside `smtp`.
//!

use std::collections::HashSet;
use std::fmt;

use super::address::Address;

/// Most recipients one message may have. `[server] max_recipients` may not
/// exceed it, and the queue's record format holds this many.
pub const MAX_RECIPIENTS: usize = 100_000;

/// Index of a recipient in [`Envelope::rcpts`]: how the queue and delivery
/// name one recipient's state and outcome. Holds [`MAX_RECIPIENTS`].
pub type RcptIndex = u32;

/// The reverse path of MAIL FROM: an address, or `<>` (RFC 5321 §4.5.5:
/// failure reports and other mail that must never be answered).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum ReversePath {
    /// `MAIL FROM:<>`.
    #[default]
    Null,
    /// A mailbox.
    Path(Address),
}

impl ReversePath {
    /// The address, unless this is `<>`.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Path(a) => Some(a),
        }
    }

    /// Is this `<>`?
    pub fn is_null(&self) -> bool {
        matches!(self, ReversePath::Null)
    }

    /// The path as it goes between angle brackets: empty for `<>`.
    pub fn as_str(&self) -> &str {
        self.address().map_or("", Address::as_str)
    }
}

impl From<Option<Address>> for ReversePath {
    fn from(a: Option<Address>) -> ReversePath {
        a.map_or(ReversePath::Null, ReversePath::Path)
    }
}

impl fmt::Display for ReversePath {
    /// What goes between the angle brackets (nothing for `<>`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.as_str())
    }
}

/// RFC 3461 `NOTIFY=`: which delivery reports the sender asked for. A set
/// of SUCCESS, FAILURE and DELAY, or NEVER alone, or nothing said
/// ([`Notify::UNSPECIFIED`], which means "failures and maybe delays").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify(u8);

impl Notify {
    /// Nothing said: the MTA's default (report failures).
    pub const UNSPECIFIED: Notify = Notify(0);
    /// `SUCCESS`.
    pub const SUCCESS: Notify = Notify(1);
    /// `FAILURE`.
    pub const FAILURE: Notify = Notify(2);
    /// `DELAY`.
    pub const DELAY: Notify = Notify(4);
    /// `NEVER` (combines with nothing).
    pub const NEVER: Notify = Notify(8);

    /// The bits, as stored.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From stored bits; `None` for bits no valid `NOTIFY=` gives (unknown
    /// bits, or NEVER with anything else).
    pub fn from_bits(bits: u8) -> Option<Notify> {
        let known = Notify::SUCCESS.0 | Notify::FAILURE.0 | Notify::DELAY.0;
        let valid = bits & !known == 0 || bits == Notify::NEVER.0;
        valid.then_some(Notify(bits))
    }

    /// Both sets together (`NEVER` with anything else is not a set RFC 3461
    /// allows: `None`).
    pub fn with(self, other: Notify) -> Option<Notify> {
        Notify::from_bits(self.0 | other.0)
    }

    /// Does this set include every item of `other`?
    pub fn contains(self, other: Notify) -> bool {
        self.0 & other.0 == other.0
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Notify::UNSPECIFIED {
            return f.write_str("Notify(unspecified)");
        }
        let names = [
            (Notify::SUCCESS, "SUCCESS"),
            (Notify::FAILURE, "FAILURE"),
            (Notify::DELAY, "DELAY"),
            (Notify::NEVER, "NEVER"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(n, _)| self.contains(*n))
            .map(|(_, s)| *s)
            .collect();
        write!(f, "Notify({})", set.join(","))
    }
}

/// RFC 3461 `RET=`: how much of the message a failure report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: its header section only.
    Hdrs,
}

/// One recipient (RCPT TO) with its RFC 3461 parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// The mailbox, after aliases.
    pub addr: Address,
    /// `NOTIFY=`.
    pub notify: Notify,
    /// `ORCPT=` as given (`addr-type;xtext`), for the report's
    /// Original-Recipient field.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient with no DSN parameters.
    pub fn new(addr: Address) -> Recipient {
        Recipient {
            addr,
            notify: Notify::UNSPECIFIED,
            orcpt: None,
        }
    }
}

/// Body type declared with `BODY=` (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// `BODY=7BIT` or nothing said.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`
    EightBitMime,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// MAIL FROM.
    pub from: ReversePath,
    /// RCPT TO, each mailbox once, in the order first given.
    pub rcpts: Vec<Recipient>,
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=` as given (xtext).
    pub envid: Option<String>,
}

impl Envelope {
    /// Add recipients, skipping any whose mailbox is already here (aliases
    /// that send two recipients to one address must not deliver it twice:
    /// Postfix's duplicate filter). The first occurrence keeps its
    /// parameters. Returns how many were skipped.
    pub fn add_rcpts(&mut self, rcpts: impl IntoIterator<Item = Recipient>) -> usize {
        let mut seen: HashSet<MailboxKey> =
            self.rcpts.iter().map(|r| MailboxKey::of(&r.addr)).collect();
        let mut skipped = 0;
        for r in rcpts {
            if seen.insert(MailboxKey::of(&r.addr)) {
                self.rcpts.push(r);
            } else {
                skipped += 1;
            }
        }
        skipped
    }
}

/// What makes two mailboxes the same for the duplicate filter: the local
/// part exactly (RFC 5321 §2.4: only the destination host may fold its
/// case), the domain without regard to case.
#[derive(PartialEq, Eq, Hash)]
struct MailboxKey(String, Option<String>);

impl MailboxKey {
    fn of(a: &Address) -> MailboxKey {
        MailboxKey(
            a.local_part().to_string(),
            a.domain().map(str::to_lowercase),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::MailParams;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn reverse_path_tells_null_from_an_address() {
        assert!(ReversePath::Null.is_null());
        assert_eq!(ReversePath::Null.as_str(), "");
        assert_eq!(ReversePath::Null.address(), None);
        assert_eq!(format!("{:?}", ReversePath::Null), "<>");
        let p = ReversePath::from(Some(addr("a@b.example")));
        assert!(!p.is_null());
        assert_eq!(p.to_string(), "a@b.example");
        assert_eq!(p.address().and_then(Address::domain), Some("b.example"));
        assert_eq!(ReversePath::from(None), ReversePath::Null);
    }

    #[test]
    fn notify_sets_follow_rfc_3461() {
        let sf = Notify::SUCCESS.with(Notify::FAILURE).unwrap();
        assert!(sf.contains(Notify::SUCCESS) && sf.contains(Notify::FAILURE));
        assert!(!sf.contains(Notify::DELAY));
        assert_eq!(Notify::NEVER.with(Notify::FAILURE), None);
        assert_eq!(Notify::from_bits(8), Some(Notify::NEVER));
        assert_eq!(Notify::from_bits(0), Some(Notify::UNSPECIFIED));
        assert_eq!(Notify::from_bits(7).map(Notify::bits), Some(7));
        assert_eq!(Notify::from_bits(9), None);
        assert_eq!(Notify::from_bits(0x10), None);
        assert_eq!(Notify::default(), Notify::UNSPECIFIED);
        assert_eq!(format!("{sf:?}"), "Notify(SUCCESS,FAILURE)");
    }

    #[test]
    fn duplicate_mailboxes_are_added_once() {
        let mut e = MailParams::default().envelope(ReversePath::Null);
        let skipped = e.add_rcpts(
            ["ops@example.com", "b@x", "ops@EXAMPLE.com", "b@x", "root"]
                .into_iter()
                .map(|s| Recipient::new(addr(s))),
        );
        assert_eq!(skipped, 2);
        let got: Vec<&str> = e.rcpts.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(got, ["ops@example.com", "b@x", "root"]);
        // Against those already there, too.
        assert_eq!(e.add_rcpts([Recipient::new(addr("root"))]), 1);
        // Local parts are compared exactly.
        assert_eq!(e.add_rcpts([Recipient::new(addr("OPS@example.com"))]), 0);
        assert_eq!(e.rcpts.len(), 4);
    }

    #[test]
    fn mail_parameters_travel_with_the_envelope() {
        let params = MailParams {
            size: Some(10),
            body: BodyType::EightBitMime,
            smtputf8: true,
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314".into()),
        };
        let e = params.envelope(ReversePath::Path(addr("a@b")));
        assert_eq!(e.body, BodyType::EightBitMime);
        assert!(e.smtputf8);
        assert_eq!(e.ret, Some(Ret::Hdrs));
        assert_eq!(e.envid.as_deref(), Some("QQ314"));
        assert!(e.rcpts.is_empty());
    }
}
