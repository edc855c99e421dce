//! Characters a person cannot see, and how postern shows text it did not
//! write.
//!
//! A device chooses its HELO name, its addresses and its headers, and an
//! upstream chooses its reply text. Printed raw, a right-to-left override
//! (U+202E) turns `moc.elpmaxe@nimda` into what looks like another
//! address, a zero-width space makes two addresses that look the same
//! differ, and a newline forges a log line. Two defences, both here:
//!
//! - [`is_hidden`]: the characters addresses may not contain (RFC 8264's
//!   idea of what an identifier must not hold, as a small table rather than
//!   a Unicode crate): controls (Cc), format characters (Cf, which holds
//!   the bidirectional controls and the zero-width characters), line and
//!   paragraph separators (Zl, Zp), spaces other than the ASCII one (Zs),
//!   and the other default-ignorable characters that render as nothing
//!   (Hangul fillers, variation selectors, tags).
//! - [`escaped`]: the one way postern prints user-supplied text (log
//!   fields, `postern queue list/show`): every hidden character and every
//!   backslash written as an escape (`\u{202e}`, `\r`, `\\`), the rest as
//!   it is, so what an admin reads is what was sent.
//!
//! Uses nothing outside this module.

use std::fmt;

/// Non-ASCII characters that are invisible or change how the text around
/// them is shown, as inclusive ranges (sorted): Unicode 15's Cf, Zs (less
/// U+0020), Zl, Zp, and the default-ignorable code points outside those.
const HIDDEN: &[(u32, u32)] = &[
    (0x00A0, 0x00A0),   // no-break space (Zs)
    (0x00AD, 0x00AD),   // soft hyphen (Cf)
    (0x034F, 0x034F),   // combining grapheme joiner (ignorable)
    (0x0600, 0x0605),   // Arabic number signs (Cf)
    (0x061C, 0x061C),   // Arabic letter mark (Cf, bidi)
    (0x06DD, 0x06DD),   // Arabic end of ayah (Cf)
    (0x070F, 0x070F),   // Syriac abbreviation mark (Cf)
    (0x0890, 0x0891),   // Arabic pound and piastre marks (Cf)
    (0x08E2, 0x08E2),   // Arabic disputed end of ayah (Cf)
    (0x115F, 0x1160),   // Hangul fillers (ignorable)
    (0x1680, 0x1680),   // Ogham space mark (Zs)
    (0x17B4, 0x17B5),   // Khmer inherent vowels (ignorable)
    (0x180B, 0x180F),   // Mongolian selectors and vowel separator
    (0x2000, 0x200F),   // spaces (Zs), zero-width space/joiners, LRM/RLM (Cf)
    (0x2028, 0x202F),   // line/paragraph separators, bidi embeddings, narrow nbsp
    (0x205F, 0x206F),   // math space, word joiner, invisible operators, bidi isolates
    (0x3000, 0x3000),   // ideographic space (Zs)
    (0x3164, 0x3164),   // Hangul filler (ignorable)
    (0xFE00, 0xFE0F),   // variation selectors (ignorable)
    (0xFEFF, 0xFEFF),   // zero-width no-break space, BOM (Cf)
    (0xFFA0, 0xFFA0),   // halfwidth Hangul filler (ignorable)
    (0xFFF0, 0xFFFB),   // unassigned specials, interlinear annotation (Cf)
    (0x110BD, 0x110BD), // Kaithi number sign (Cf)
    (0x110CD, 0x110CD), // Kaithi number sign above (Cf)
    (0x13430, 0x1343F), // Egyptian hieroglyph format controls (Cf)
    (0x1BCA0, 0x1BCA3), // shorthand format controls (Cf)
    (0x1D173, 0x1D17A), // musical symbol format controls (Cf)
    (0xE0000, 0xE0FFF), // tags (Cf) and variation selectors supplement
];

/// A character a person cannot see, or that changes how the text around it
/// is shown: a control (C0, DEL, C1) or one of the table above. Addresses
/// may not contain these; printed text shows them escaped.
pub fn is_hidden(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    if c.is_ascii() {
        return false;
    }
    let n = u32::from(c);
    HIDDEN
        .binary_search_by(|&(lo, hi)| {
            if hi < n {
                std::cmp::Ordering::Less
            } else if lo > n {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `s` for a log line or a listing: see [`escaped`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a str);

/// Show `s` so that every character a person cannot see is visible as an
/// escape: `\r`, `\n`, `\t`, `\u{202e}`; a backslash is doubled, so an
/// escape in the output always means the character was there.
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| c == '\\' || is_hidden(c)) {
            let (clean, tail) = rest.split_at(i);
            f.write_str(clean)?;
            let mut chars = tail.chars();
            match chars.next() {
                Some('\\') => f.write_str("\\\\")?,
                Some('\r') => f.write_str("\\r")?,
                Some('\n') => f.write_str("\\n")?,
                Some('\t') => f.write_str("\\t")?,
                Some(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                None => {}
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for w in HIDDEN.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:x?}");
        }
    }

    #[test]
    fn hidden_characters() {
        for c in [
            '\0',
            '\r',
            '\n',
            '\t',
            '\u{7f}',
            '\u{85}',
            '\u{9b}', // controls
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}', // zero-width, LRM, RLM
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}', // bidi embeddings, isolates
            '\u{2028}',
            '\u{2029}', // Zl, Zp
            '\u{a0}',
            '\u{2007}',
            '\u{202f}',
            '\u{3000}', // non-ASCII spaces
            '\u{ad}',
            '\u{feff}',
            '\u{61c}',
            '\u{3164}',
            '\u{fe0f}',
            '\u{e0041}',
        ] {
            assert!(is_hidden(c), "{:x}", u32::from(c));
        }
        for c in [
            'a',
            ' ',
            '~',
            '@',
            'é',
            'ü',
            '用',
            'Ω',
            '\u{2010}',
            '\u{2030}',
            '\u{205e}',
            '\u{3001}',
            '\u{fe10}',
            '\u{1f600}',
        ] {
            assert!(!is_hidden(c), "{:x}", u32::from(c));
        }
    }

    #[test]
    fn escaping_shows_what_was_sent() {
        let e = |s: &str| escaped(s).to_string();
        assert_eq!(e("ops@example.com"), "ops@example.com");
        assert_eq!(e("jörg@bücher.example"), "jörg@bücher.example");
        assert_eq!(
            e("admin\u{202e}moc.elpmaxe@x"),
            "admin\\u{202e}moc.elpmaxe@x"
        );
        assert_eq!(e("a\u{200b}b"), "a\\u{200b}b");
        assert_eq!(e("forged\r\nINFO queued"), "forged\\r\\nINFO queued");
        assert_eq!(e("tab\there\u{1b}[31m"), "tab\\there\\u{1b}[31m");
        // A backslash is doubled, so text that spells an escape is told
        // apart from the character itself.
        assert_eq!(e("\\u{202e}"), "\\\\u{202e}");
        assert_eq!(e("\"a\\\"b\"@x"), "\"a\\\\\"b\"@x");
        assert_eq!(e(""), "");
    }
}
