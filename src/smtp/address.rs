//! RFC 5321 mailboxes (`local-part@domain`), with RFC 6531 UTF-8.

use std::fmt;

/// Longest mailbox we accept: RFC 5321 §4.5.3.1.3 bounds a path at 256
/// octets including the angle brackets.
pub const MAX_ADDRESS_LEN: usize = 254;

/// A syntactically valid mailbox. The domain is optional because LAN devices
/// send to bare local parts (`root`, `admin`) and `<Postmaster>` is legal;
/// policy decides whether such an address is acceptable.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    text: String,
    /// Byte index of the `@` separating local part and domain, if any.
    at: Option<usize>,
}

/// Why a mailbox was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Nothing between the angle brackets where a mailbox was required.
    #[error("empty address")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("address longer than {MAX_ADDRESS_LEN} octets")]
    TooLong,
    /// The local part is not a dot-string or quoted-string.
    #[error("invalid local part")]
    LocalPart,
    /// The domain is not a domain name or address literal.
    #[error("invalid domain")]
    Domain,
}

impl Address {
    /// Parse a mailbox without angle brackets, e.g. `user@example.com`.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let _ = s;
        unimplemented!("helper: smtp/address.rs")
    }
    /// The whole mailbox as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// The part before the `@` (with quotes, as received).
    pub fn local_part(&self) -> &str {
        match self.at {
            Some(i) => &self.text[..i],
            None => &self.text,
        }
    }
    /// The part after the `@`, if there is one.
    pub fn domain(&self) -> Option<&str> {
        self.at.map(|i| &self.text[i + 1..])
    }
    /// True when the mailbox has non-ASCII characters (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.text.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.text)
    }
}
