//! The Subject as storm suppression compares it: the parts that change
//! from one copy of an alert to the next (counters, times, dates, hex
//! ids) masked, case and blanks made uniform.

/// Longest normalised Subject, in characters (cut at a word boundary).
pub const MAX_KEY_CHARS: usize = 200;

const DATE_WORDS: &[&str] = &[
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Mask what changes between copies of one alert: a run of ASCII
/// digits, a word of hex digits with at least one digit in it (ids,
/// hashes, UUID parts), or a C-style hex number (`0x7f3a0c`) becomes `#`; month and weekday names become `#`
/// (dates); letters are lowercased, runs of blanks become one space, the
/// ends are trimmed. `"UPS 3: on battery since 02:10 (id 7f3a9c)"` and
/// `"UPS 3: on battery since 02:41 (id 81bb02)"` give the same text.
///
/// Idempotent, and changing digits never changes the result (both are
/// property-tested).
pub fn normalize_subject(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_KEY_CHARS * 2));
    let mut word = String::new();
    let mut blank = false;
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        let has_digit = word.bytes().any(|b| b.is_ascii_digit());
        // `0x7f3a0c`: a hex number as C writes it (a digit, then x).
        let c_hex = word.len() > 2
            && word.as_bytes()[0].is_ascii_digit()
            && word.as_bytes()[1] == b'x'
            && word.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
        if c_hex || (has_digit && word.bytes().all(|b| b.is_ascii_hexdigit())) {
            out.push('#');
        } else {
            // Runs of digits and of other characters, each on its own: a
            // month name stuck to a number ("Mar1") is still a date.
            let mut run = String::new();
            let mut chars = word.chars().peekable();
            while let Some(c) = chars.next() {
                run.push(c);
                let digit = c.is_ascii_digit();
                if chars.peek().is_none_or(|n| n.is_ascii_digit() != digit) {
                    if digit || DATE_WORDS.contains(&run.as_str()) {
                        out.push('#');
                    } else {
                        out.push_str(&run);
                    }
                    run.clear();
                }
            }
        }
        word.clear();
    };
    // Lowercase first, so that both passes see the same words.
    let lowered = s.to_lowercase();
    for c in lowered.chars() {
        if c.is_alphanumeric() {
            if blank && !out.is_empty() {
                out.push(' ');
            }
            blank = false;
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if c.is_whitespace() || c.is_control() {
                blank = true;
            } else {
                if blank && !out.is_empty() {
                    out.push(' ');
                }
                blank = false;
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    if out.chars().count() > MAX_KEY_CHARS {
        let cut: String = out.chars().take(MAX_KEY_CHARS).collect();
        // At a word boundary, so no word is left half (which could then
        // read as something else, e.g. "mar" of "market").
        let end = cut
            .char_indices()
            .rfind(|(_, c)| !c.is_alphanumeric())
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(cut.len());
        out = cut[..end].trim_end().to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn copies_of_one_alert_compare_equal() {
        let a = normalize_subject("UPS 3: on battery since 02:10 (id 7f3a9c)");
        let b = normalize_subject("ups 3:  On Battery since 02:41 (id 81bb02)");
        assert_eq!(a, b);
        assert_eq!(a, "ups #: on battery since #:# (id #)");
        assert_eq!(
            normalize_subject("Backup failed on Mon, 23 Nov 2026"),
            normalize_subject("Backup failed on Tue, 24 Nov 2026")
        );
        assert_eq!(
            normalize_subject("job 550e8400-e29b-41d4-a716-446655440000 failed"),
            normalize_subject("job 123e4567-e89b-12d3-a456-426614174000 failed")
        );
        // A C-style hex number is one id, whatever its letters.
        assert_eq!(
            normalize_subject("event 0x7f3a00 on battery"),
            normalize_subject("event 0x7f3a0a on battery")
        );
        assert_eq!(normalize_subject("event 0x7F3A0A"), "event #");
        // Words of hex letters alone are words.
        assert_eq!(normalize_subject("Cafe added"), "cafe added");
        assert_ne!(normalize_subject("disk full"), normalize_subject("disk ok"));
    }

    proptest! {
        #[test]
        fn normalising_twice_changes_nothing(s in "\\PC{0,300}") {
            let once = normalize_subject(&s);
            prop_assert_eq!(normalize_subject(&once), once.clone());
            prop_assert!(once.chars().count() <= MAX_KEY_CHARS);
        }

        #[test]
        fn other_digits_give_the_same_key(
            s in "[a-zA-Z0-9 :()./-]{0,120}",
            seed in any::<u64>(),
        ) {
            let mut x = seed;
            let changed: String = s
                .chars()
                .map(|c| {
                    if c.is_ascii_digit() {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        char::from(b'0' + u8::try_from((x >> 33) % 10).unwrap_or(0))
                    } else {
                        c
                    }
                })
                .collect();
            prop_assert_eq!(normalize_subject(&s), normalize_subject(&changed));
        }
    }
}
