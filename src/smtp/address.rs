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
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        let local_len = local_part_len(s)?;
        let rest = s.get(local_len..).ok_or(AddressError::LocalPart)?;
        let at = if rest.is_empty() {
            None
        } else if let Some(domain) = rest.strip_prefix('@') {
            check_domain(domain)?;
            Some(local_len)
        } else {
            // Something other than `@` right after a complete local part,
            // e.g. `"a"b@c` or `a b@c`.
            return Err(AddressError::LocalPart);
        };
        Ok(Address {
            text: s.to_owned(),
            at,
        })
    }
    /// A mailbox read back from the queue, where [`Address::parse`] put it
    /// once. Only split, not validated again: a parser made stricter since
    /// the message was accepted must not turn queued mail into a record
    /// that cannot be read. Fails only for an empty string.
    pub fn from_stored(s: &str) -> Result<Address, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        // The local part ends at the first `@` outside a leading
        // quoted-string; a domain never holds an `@`.
        let local_end = match s.strip_prefix('"') {
            Some(quoted) => quoted_len(quoted).map_or(0, |n| n + 1),
            None => 0,
        };
        let at = s
            .get(local_end..)
            .and_then(|rest| rest.find('@'))
            .map(|i| local_end + i);
        Ok(Address {
            text: s.to_owned(),
            at,
        })
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

/// Length in bytes of the local part at the start of `s`: a quoted-string
/// (RFC 5321 `Quoted-string`) or a dot-string, ending at the first `@` outside
/// quotes or at the end of `s`.
fn local_part_len(s: &str) -> Result<usize, AddressError> {
    match s.strip_prefix('"') {
        Some(quoted) => quoted_len(quoted).map(|n| n + 1),
        None => dot_string_len(s),
    }
}

/// Bytes up to and including the closing quote of a quoted-string whose
/// opening quote is already stripped.
fn quoted_len(s: &str) -> Result<usize, AddressError> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            // quoted-pairSMTP is a backslash and one printable ASCII
            // character (or space); RFC 6531 does not widen it.
            if !(' '..='~').contains(&c) {
                return Err(AddressError::LocalPart);
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Ok(i + 1);
        } else if !is_qtext(c) {
            return Err(AddressError::LocalPart);
        }
    }
    // Ran out of input inside the quotes.
    Err(AddressError::LocalPart)
}

/// qtextSMTP (RFC 5321 §4.1.2) widened by RFC 6531 to non-ASCII text.
fn is_qtext(c: char) -> bool {
    matches!(c, ' ' | '!' | '#'..='[' | ']'..='~') || is_utf8_text(c)
}

/// Non-ASCII characters RFC 6531 lets through (`UTF8-non-ascii`), minus
/// what a person cannot see ([`super::escape::is_hidden`]: C1 controls,
/// bidirectional and zero-width format characters, non-ASCII spaces): an
/// address holding one can be made to look like another in a log, a
/// listing or a mail client.
fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !super::escape::is_hidden(c)
}

/// atext (RFC 5322 §3.2.3) widened by RFC 6531.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_text(c)
}

/// Bytes of the dot-string at the start of `s`: atoms separated by single
/// dots, ending before the first `@` or at the end.
fn dot_string_len(s: &str) -> Result<usize, AddressError> {
    let end = s.find('@').unwrap_or(s.len());
    let local = s.get(..end).ok_or(AddressError::LocalPart)?;
    // split() yields an empty atom for a leading, trailing or doubled dot,
    // and for an empty local part.
    for atom in local.split('.') {
        if atom.is_empty() || !atom.chars().all(is_atext) {
            return Err(AddressError::LocalPart);
        }
    }
    Ok(end)
}

/// Longest DNS label, in octets (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A domain as RFC 5321 allows it after `@`: a name or an address literal.
fn check_domain(d: &str) -> Result<(), AddressError> {
    match d.strip_prefix('[') {
        Some(lit) => {
            let inner = lit.strip_suffix(']').ok_or(AddressError::Domain)?;
            check_address_literal(inner)
        }
        None => check_domain_name(d),
    }
}

/// `IPv4-address-literal` or `IPv6-address-literal` (RFC 5321 §4.1.3),
/// without the brackets. General literals (`tag:content`) are refused: no tag
/// other than IPv6 has ever been registered, so nothing could route them.
fn check_address_literal(inner: &str) -> Result<(), AddressError> {
    let ok = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner
            .get(5..)
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        // std's parser rejects leading zeros and out-of-range octets, which
        // is what RFC 5321's Snum grammar asks for.
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(AddressError::Domain)
    }
}

/// Dot-separated labels of letters, digits and inner hyphens (RFC 5321
/// `sub-domain`), with U-labels allowed (RFC 6531). A trailing root dot is
/// not part of the grammar.
pub(crate) fn check_domain_name(d: &str) -> Result<(), AddressError> {
    for label in d.split('.') {
        let valid = !label.is_empty()
            // The limit is on the wire (A-label) form; a U-label's punycode
            // length is not worth computing here, the overall cap bounds it.
            && (!label.is_ascii() || label.len() <= MAX_LABEL_LEN)
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_text(c));
        if !valid {
            return Err(AddressError::Domain);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Address {
        match Address::parse(s) {
            Ok(a) => a,
            Err(e) => panic!("{s:?} should parse, got {e:?}"),
        }
    }

    fn err(s: &str) -> AddressError {
        match Address::parse(s) {
            Ok(a) => panic!("{s:?} should be refused, parsed as {a:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_mailbox_splits_local_part_and_domain() {
        let a = ok("user@example.com");
        assert_eq!(a.local_part(), "user");
        assert_eq!(a.domain(), Some("example.com"));
        assert_eq!(a.as_str(), "user@example.com");
        assert_eq!(a.to_string(), "user@example.com");
        assert_eq!(format!("{a:?}"), "<user@example.com>");
        assert!(!a.is_utf8());
    }

    #[test]
    fn dot_string_with_all_atext_specials_is_accepted() {
        let a = ok("a.b!#$%&'*+-/=?^_`{|}~c@x.example");
        assert_eq!(a.local_part(), "a.b!#$%&'*+-/=?^_`{|}~c");
    }

    #[test]
    fn bare_local_part_has_no_domain() {
        let a = ok("root");
        assert_eq!(a.local_part(), "root");
        assert_eq!(a.domain(), None);
        assert_eq!(ok("Postmaster").domain(), None);
    }

    #[test]
    fn quoted_local_parts_keep_their_quotes() {
        let a = ok("\"john doe\"@example.com");
        assert_eq!(a.local_part(), "\"john doe\"");
        assert_eq!(a.domain(), Some("example.com"));
        // An @ inside the quotes does not split the address.
        let a = ok("\"a@b\"@example.com");
        assert_eq!(a.local_part(), "\"a@b\"");
        assert_eq!(a.domain(), Some("example.com"));
        // Escaped quote and backslash.
        assert_eq!(ok(r#""a\"b\\c"@x"#).local_part(), r#""a\"b\\c""#);
        // The empty quoted string is in the grammar.
        assert_eq!(ok("\"\"@example.com").local_part(), "\"\"");
        // Quoted without a domain.
        assert_eq!(ok("\"john doe\"").domain(), None);
    }

    #[test]
    fn bad_quoted_local_parts_are_refused() {
        assert_eq!(err("\"unterminated@example.com"), AddressError::LocalPart);
        assert_eq!(err("\"a\"b@example.com"), AddressError::LocalPart);
        assert_eq!(err("\"a\tb\"@example.com"), AddressError::LocalPart);
        assert_eq!(err("\"a\\\tb\"@example.com"), AddressError::LocalPart);
        assert_eq!(err("\"a\\"), AddressError::LocalPart);
        assert_eq!(err("\"a\u{7f}\"@x"), AddressError::LocalPart);
    }

    #[test]
    fn bad_dot_strings_are_refused() {
        for s in [
            "@example.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "john doe@example.com",
            "a(b)@example.com",
            "a,b@example.com",
            "a<b@example.com",
            "a\"b@example.com",
            "a\\b@example.com",
            "a;b",
            "a:b",
        ] {
            assert_eq!(err(s), AddressError::LocalPart, "{s:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_everywhere() {
        assert_eq!(err("a\0b@example.com"), AddressError::LocalPart);
        assert_eq!(err("a\r\nb@example.com"), AddressError::LocalPart);
        assert_eq!(err("ab@exa\nmple.com"), AddressError::Domain);
        assert_eq!(err("ab@example.com\r"), AddressError::Domain);
        assert_eq!(err("\"a\r\nb\"@example.com"), AddressError::LocalPart);
        // C1 controls are non-ASCII but still controls.
        assert_eq!(err("a\u{85}b@example.com"), AddressError::LocalPart);
        assert_eq!(err("ab@ex\u{9b}ample.com"), AddressError::Domain);
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused_everywhere() {
        // Accepted before (with SMTPUTF8), even in domains, and printed
        // raw: an address that looks like another.
        for (s, e) in [
            (
                "admin\u{202e}moc.elpmaxe@example.com",
                AddressError::LocalPart,
            ),
            ("ad\u{200b}min@example.com", AddressError::LocalPart),
            ("\"ad\u{2066}min\"@example.com", AddressError::LocalPart),
            ("ops\u{a0}@example.com", AddressError::LocalPart),
            ("ops@exa\u{200d}mple.com", AddressError::Domain),
            ("ops@bank\u{202e}.example", AddressError::Domain),
            ("ops@example\u{3000}.com", AddressError::Domain),
            ("ops@ex\u{feff}ample.com", AddressError::Domain),
            ("ops@example\u{2028}.com", AddressError::Domain),
        ] {
            assert_eq!(err(s), e, "{s:?}");
        }
        // Visible UTF-8 is still fine.
        ok("jörg@bücher.example");
    }

    #[test]
    fn domain_names_follow_the_ldh_rule() {
        ok("a@x");
        ok("a@localhost");
        ok("a@a-b.c-d.example");
        ok("a@123.example");
        ok(&format!("a@{}.example", "l".repeat(63)));
        for s in [
            "a@",
            "a@.example.com",
            "a@example.com.",
            "a@example..com",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@exa mple.com",
            "a@example.com@x",
            "a@b@c",
        ] {
            assert_eq!(err(s), AddressError::Domain, "{s:?}");
        }
        assert_eq!(
            err(&format!("a@{}.example", "l".repeat(64))),
            AddressError::Domain
        );
    }

    #[test]
    fn address_literals() {
        let a = ok("user@[192.0.2.1]");
        assert_eq!(a.domain(), Some("[192.0.2.1]"));
        ok("user@[IPv6:2001:db8::1]");
        ok("user@[ipv6:::1]");
        ok("user@[IPv6:::ffff:192.0.2.1]");
        for s in [
            "user@[192.0.2.256]",
            "user@[192.0.2]",
            "user@[192.0.2.01]",
            "user@[2001:db8::1]",
            "user@[IPv6:192.0.2.1]",
            "user@[IPv6:2001:db8::1%eth0]",
            "user@[x-tag:stuff]",
            "user@[192.0.2.1",
            "user@192.0.2.1]",
            "user@[]",
            "user@[ 192.0.2.1]",
        ] {
            assert_eq!(err(s), AddressError::Domain, "{s:?}");
        }
    }

    #[test]
    fn utf8_local_part_and_domain_are_accepted_and_flagged() {
        let a = ok("用户@例子.广告");
        assert!(a.is_utf8());
        assert_eq!(a.local_part(), "用户");
        assert_eq!(a.domain(), Some("例子.广告"));
        assert!(ok("jörg@bücher.example").is_utf8());
        assert!(ok("\"jörg m\"@example.com").is_utf8());
        // Hyphen rules still apply to U-labels.
        assert_eq!(err("a@-bücher.example"), AddressError::Domain);
    }

    #[test]
    fn length_is_bounded() {
        let local = "a".repeat(64);
        let domain_len = MAX_ADDRESS_LEN - local.len() - 1;
        // Labels of 50 'd' joined by dots, cut to the exact length.
        let mut domain = String::new();
        while domain.len() < domain_len {
            if !domain.is_empty() {
                domain.push('.');
            }
            domain.push_str(&"d".repeat(50));
        }
        domain.truncate(domain_len);
        let longest = format!("{local}@{domain}");
        assert_eq!(longest.len(), MAX_ADDRESS_LEN);
        ok(&longest);
        assert_eq!(err(&format!("{longest}x")), AddressError::TooLong);
        // The limit counts octets, not characters.
        let utf8 = "é".repeat(MAX_ADDRESS_LEN / 2 + 1);
        assert_eq!(err(&utf8), AddressError::TooLong);
    }

    #[test]
    fn stored_addresses_split_as_parsed_ones_without_validation() {
        for s in [
            "user@example.com",
            "root",
            "\"a@b\"@example.com",
            "\"a@b\"",
            r#""a\"@b"@x"#,
            "用户@例子.广告",
            "user@[IPv6:2001:db8::1]",
        ] {
            let stored = Address::from_stored(s).unwrap();
            assert_eq!(stored, ok(s), "{s:?}");
            assert_eq!(stored.domain(), ok(s).domain(), "{s:?}");
        }
        // What a stricter parser would refuse still reads back.
        let odd = Address::from_stored("a\u{202e}b@ex ample.com").unwrap();
        assert_eq!(odd.domain(), Some("ex ample.com"));
        assert_eq!(Address::from_stored(""), Err(AddressError::Empty));
    }

    #[test]
    fn empty_is_its_own_error() {
        assert_eq!(err(""), AddressError::Empty);
    }
}
