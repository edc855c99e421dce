//! RFC 3461 §4 xtext, the encoding of the DSN parameters `ENVID` and
//! `ORCPT`: printable ASCII as itself, except `+` and `=`, and any octet
//! as `+` and two upper-case hex digits.

/// Why a parameter value is not xtext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XtextError {
    /// A character outside `!`..`~`, or a bare `=`.
    #[error("not xtext: only printable ASCII other than \"+\" and \"=\" may appear as itself")]
    Character,
    /// `+` not followed by two upper-case hex digits.
    #[error("not xtext: \"+\" must be followed by two upper-case hex digits")]
    Escape,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Check that `s` is valid xtext and decode it to its octets.
pub fn decode(s: &str) -> Result<Vec<u8>, XtextError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(XtextError::Escape);
                };
                out.push(h << 4 | l);
                i += 3;
            }
            b'!'..=b'~' if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return Err(XtextError::Character),
        }
    }
    Ok(out)
}

/// The text `s` stands for, for a report: what does not decode is kept as
/// written, and octets that are not UTF-8 are replaced.
pub fn decode_lossy(s: &str) -> String {
    match decode(s) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => s.to_string(),
    }
}

/// `s` as xtext.
pub fn encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s {
        match c {
            b'!'..=b'~' if c != b'+' && c != b'=' => out.push(char::from(c)),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('+');
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 15)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rules() {
        assert_eq!(decode("QQ+2B314").unwrap(), b"QQ+314");
        assert_eq!(encode(b"a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(decode(&encode(b"a+b=c d\x01")).unwrap(), b"a+b=c d\x01");
        assert_eq!(decode("a=b"), Err(XtextError::Character));
        assert_eq!(decode("a b"), Err(XtextError::Character));
        assert_eq!(decode("é"), Err(XtextError::Character));
        assert_eq!(decode("a+2"), Err(XtextError::Escape));
        assert_eq!(decode("a+2b"), Err(XtextError::Escape));
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode_lossy("x+"), "x+");
    }
}
