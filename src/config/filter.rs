//! `[[filter]]` (declarative rules on envelope, headers and attachments)
//! and `[storm]` (alert-storm suppression): their keys, the pattern
//! grammar (glob, or `/regex/` through regex-lite) and the checks between
//! a rule's keys. A pattern that does not compile is reported at its own
//! FILE:LINE:COL by `postern check`.
//!
//! Uses the config's own `schema`, `convert` and `values`; regex-lite.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use super::convert::{
    DAY, MINUTE, SECOND, boolean, count, duration, mailbox, net, one_line, size, text,
};
use super::schema::{Print, Section, default, list, optional, quote, required, scalar, table};
use super::values::{Dur, Size};
use super::{Ctx, Reported};

/// Longest pattern text: a rule is read by a person, and a compiled
/// regex costs memory in proportion.
pub const MAX_PATTERN_LEN: usize = 1000;
/// Compiled size a regex may reach (regex-lite's own measure, octets).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Most `[[filter]]` tables: every message is matched against each.
pub const MAX_FILTERS: usize = 1000;

/// A text pattern: a glob (`*` any run, `?` one character, `\` quotes the
/// next; whole text, case-insensitive) or, written `/…/` (`/…/i` for
/// case-insensitive), a regular expression found anywhere in the text.
#[derive(Clone)]
pub enum Pattern {
    /// The glob, lowercased, as characters.
    Glob {
        /// As written.
        text: String,
        /// Lowercased pattern characters; `None` marks a `*`, `Some('?')`
        /// after an escape is a literal question mark.
        parts: Vec<GlobPart>,
    },
    /// A compiled regular expression.
    Regex {
        /// As written, slashes included.
        text: String,
        /// The compiled form.
        re: regex_lite::Regex,
    },
}

/// One element of a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobPart {
    /// `*`: any run of characters, none included.
    Star,
    /// `?`: any one character.
    One,
    /// This character (lowercased).
    Char(char),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", self.text())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text() == other.text()
    }
}

impl Pattern {
    /// The pattern as written.
    pub fn text(&self) -> &str {
        match self {
            Pattern::Glob { text, .. } | Pattern::Regex { text, .. } => text,
        }
    }

    /// Does `s` match?
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Regex { re, .. } => re.is_match(s),
            Pattern::Glob { parts, .. } => glob_match(parts, s),
        }
    }
}

/// Whole-text glob match, case-insensitive; iterative, with one
/// backtracking point (the last star), so time is linear-ish and never
/// exponential whatever the pattern.
fn glob_match(parts: &[GlobPart], s: &str) -> bool {
    let text: Vec<char> = s.chars().flat_map(char::to_lowercase).collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match parts.get(p) {
            Some(GlobPart::Star) => {
                star = Some((p, t));
                p += 1;
            }
            Some(GlobPart::One) => {
                p += 1;
                t += 1;
            }
            Some(GlobPart::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    parts[p.min(parts.len())..]
        .iter()
        .all(|x| *x == GlobPart::Star)
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Pattern, String> {
        if s.is_empty() {
            return Err("the pattern is empty; write \"*\" for any text".to_string());
        }
        if s.chars().count() > MAX_PATTERN_LEN {
            return Err(format!(
                "the pattern is longer than {MAX_PATTERN_LEN} characters"
            ));
        }
        if let Some(body) = s.strip_prefix('/') {
            let (inner, insensitive) = if let Some(i) = body.strip_suffix("/i") {
                (i, true)
            } else if let Some(i) = body.strip_suffix('/') {
                (i, false)
            } else {
                return Err(format!(
                    "\"{s}\" starts with '/' but does not end with '/' or '/i'; a regular \
                     expression is written \"/^UPS .* on battery/\" (a glob never starts with '/')"
                ));
            };
            if inner.is_empty() {
                return Err("the regular expression is empty; write \"*\" for any text".into());
            }
            let re = regex_lite::RegexBuilder::new(inner)
                .case_insensitive(insensitive)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("\"{s}\" is not a valid regular expression: {e}"))?;
            return Ok(Pattern::Regex {
                text: s.to_string(),
                re,
            });
        }
        let mut parts = Vec::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '*' => GlobPart::Star,
                '?' => GlobPart::One,
                '\\' => match chars.next() {
                    Some(q) => GlobPart::Char(q),
                    None => {
                        return Err(format!(
                            "\"{s}\" ends with '\\', which quotes nothing; write \"\\\\\\\\\" for a \
                             backslash"
                        ));
                    }
                },
                c if c.is_control() => {
                    return Err(format!("\"{s}\" contains a control character"));
                }
                c => {
                    // Some characters lowercase to several (as the text
                    // will in glob_match): push them all.
                    parts.extend(c.to_lowercase().map(GlobPart::Char));
                    continue;
                }
            });
        }
        // `**` is `*`: collapse, so matching never works harder for it.
        parts.dedup_by(|a, b| *a == GlobPart::Star && *b == GlobPart::Star);
        Ok(Pattern::Glob {
            text: s.to_string(),
            parts,
        })
    }
}

impl Print for Pattern {
    fn toml(&self) -> Option<String> {
        Some(quote(self.text()))
    }
}

/// `header = ["X-Mailer: APC*"]`: a field name and a pattern for its value
/// (unfolded, leading blanks removed).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    /// Field name, as written (compared without regard to case).
    pub name: String,
    /// Pattern for the value.
    pub pattern: Pattern,
}

impl FromStr for HeaderMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<HeaderMatch, String> {
        let (name, pat) = s.split_once(':').ok_or_else(|| {
            format!("\"{s}\" has no ':'; write \"Field-Name: pattern\", e.g. \"X-Mailer: APC*\"")
        })?;
        let name =
            field_name(name.trim_end()).map_err(|why| format!("\"{s}\": the field name {why}"))?;
        let pattern = pat.trim_start().parse::<Pattern>()?;
        Ok(HeaderMatch { name, pattern })
    }
}

impl fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.pattern.text())
    }
}

/// A field name: RFC 5322 ftext (printable ASCII but the colon), not empty.
fn field_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = s.chars().find(|c| !matches!(*c as u32, 33..=57 | 59..=126)) {
        return Err(format!(
            "contains {c:?}; a field name is printable ASCII without spaces or ':'"
        ));
    }
    if s.len() > 76 {
        return Err("is longer than 76 characters".into());
    }
    Ok(s.to_string())
}

/// `add_header = ["X-Alert: ups"]`: a whole field to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    /// Field name.
    pub name: String,
    /// Value (one line, no control characters).
    pub value: String,
}

impl FromStr for HeaderLine {
    type Err = String;
    fn from_str(s: &str) -> Result<HeaderLine, String> {
        let (name, value) = s.split_once(':').ok_or_else(|| {
            format!("\"{s}\" has no ':'; write \"Field-Name: value\", e.g. \"X-Alert: ups\"")
        })?;
        let name =
            field_name(name.trim_end()).map_err(|why| format!("\"{s}\": the field name {why}"))?;
        let value = value.trim().to_string();
        if value.chars().any(char::is_control) {
            return Err(format!(
                "\"{s}\": the value contains a control character; a field is one line"
            ));
        }
        if value.len() > 900 {
            return Err(format!("\"{s}\": the value is longer than 900 octets"));
        }
        Ok(HeaderLine { name, value })
    }
}

impl fmt::Display for HeaderLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.value)
    }
}

/// `reject = "550 5.7.1 text"`: the reply a rejecting rule sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectReply {
    /// 4xx or 5xx.
    pub code: u16,
    /// The enhanced status code (`5.7.1`); its class follows the code when
    /// not written.
    pub status: (u8, u16, u16),
    /// The text.
    pub text: String,
}

impl FromStr for RejectReply {
    type Err = String;
    fn from_str(s: &str) -> Result<RejectReply, String> {
        let help = "write a reply like \"550 5.7.1 Executables are not accepted here\" (code \
                    4xx for try-later or 5xx for never, then optionally the enhanced status, \
                    then the text)";
        let mut words = s.trim().splitn(2, ' ');
        let code = words
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (400..600).contains(c))
            .ok_or_else(|| format!("\"{s}\" does not start with a reply code 400-599; {help}"))?;
        let rest = words.next().unwrap_or("").trim_start();
        let class = u8::try_from(code / 100).unwrap_or(5);
        let (status, text) = match rest.split_once(' ').map_or((rest, ""), |(a, b)| (a, b)) {
            (first, text) if first.split('.').count() == 3 && first.starts_with(['4', '5']) => {
                let mut p = first.split('.');
                let parsed = (
                    p.next().and_then(|x| x.parse::<u8>().ok()),
                    p.next().and_then(|x| x.parse::<u16>().ok()),
                    p.next().and_then(|x| x.parse::<u16>().ok()),
                );
                match parsed {
                    (Some(c), Some(sub), Some(det)) if c == class && sub <= 999 && det <= 999 => {
                        ((c, sub, det), text.trim())
                    }
                    (Some(c), Some(_), Some(_)) if c != class => {
                        return Err(format!(
                            "\"{s}\": the enhanced status {first} must start with {class} like \
                             the code {code}"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "\"{s}\": \"{first}\" is not an enhanced status; {help}"
                        ));
                    }
                }
            }
            _ => ((class, 7, 1), rest),
        };
        if text.is_empty() {
            return Err(format!(
                "\"{s}\" has no text; the client shows it to a person, so say why, e.g. \
                 \"550 5.7.1 Executables are not accepted here\""
            ));
        }
        if text.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(format!(
                "\"{s}\": the text must be printable ASCII on one line"
            ));
        }
        if text.len() > 400 {
            return Err(format!("\"{s}\": the text is longer than 400 characters"));
        }
        Ok(RejectReply {
            code,
            status,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for RejectReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.status;
        write!(f, "{} {a}.{b}.{c} {}", self.code, self.text)
    }
}

/// An attachment's file-name extension, lowercased, without the dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension(pub String);

impl FromStr for Extension {
    type Err = String;
    fn from_str(s: &str) -> Result<Extension, String> {
        let e = s.strip_prefix('.').unwrap_or(s);
        if e.is_empty()
            || e.len() > 32
            || !e
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "\"{s}\" is not a file-name extension; write e.g. \"exe\" or \".js\""
            ));
        }
        Ok(Extension(e.to_lowercase()))
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! print_display {
    ($($t:ty),*) => {
        $(impl Print for $t {
            fn toml(&self) -> Option<String> {
                Some(quote(&self.to_string()))
            }
        })*
    };
}
print_display!(HeaderMatch, HeaderLine, RejectReply, Extension);

fn parsed<T: FromStr<Err = String>>(
    example: &'static str,
) -> impl Fn(&DeValue) -> Result<T, String> {
    move |v| text(v, example)?.parse()
}

table! {
    /// One `[[filter]]`: conditions (every one given must hold; a list
    /// holds when any element does) and actions.
    pub struct FilterConfig, read as FilterKeys {
        /// Required. Names the rule in logs (`reason=filter:NAME`) and in
        /// `postern filter test`.
        name: String = required("\"block-executables\"", one_line("\"block-executables\"")),
        /// Client networks.
        client: Vec<IpNet> = default(Vec::new(), list(net)),
        /// Authenticated user names (patterns); a client without AUTH matches none.
        user: Vec<Pattern> = default(Vec::new(), list(parsed("\"scanner\""))),
        /// Envelope senders (patterns; `<>` is the null sender).
        sender: Vec<Pattern> = default(Vec::new(), list(parsed("\"*@ups.lan\""))),
        /// Envelope recipients (patterns).
        recipient: Vec<Pattern> = default(Vec::new(), list(parsed("\"*@example.com\""))),
        /// Header fields: "Name: pattern".
        header: Vec<HeaderMatch> = default(Vec::new(), list(parsed("\"X-Mailer: APC*\""))),
        /// The Subject (patterns).
        subject: Vec<Pattern> = default(Vec::new(), list(parsed("\"*on battery*\""))),
        /// The message is larger than this.
        size_over: Option<Size> = optional(size(1, u64::MAX)),
        /// An attachment's MIME type (patterns, e.g. "application/x-msdownload").
        attachment_type: Vec<Pattern> =
            default(Vec::new(), list(parsed("\"application/x-msdownload\""))),
        /// An attachment's file-name extension ("exe", ".js").
        attachment_ext: Vec<Extension> = default(Vec::new(), list(parsed("\"exe\""))),
        /// Action: refuse with this reply ("550 5.7.1 text").
        reject: Option<RejectReply> =
            optional(parsed("\"550 5.7.1 Executables are not accepted here\"")),
        /// Action: accept and drop (logged).
        discard: bool = default(false, boolean),
        /// Action: queue but keep from delivery until `postern queue release`.
        hold: bool = default(false, boolean),
        /// Action: deliver over the `[[route]]` of this name, whatever the domains.
        route: Option<String> = optional(one_line("\"m365\"")),
        /// Action: add these fields ("Name: value").
        add_header: Vec<HeaderLine> = default(Vec::new(), list(parsed("\"X-Alert: ups\""))),
        /// Action: remove every field of these names.
        remove_header: Vec<String> = default(
            Vec::new(),
            list(scalar(|v| field_name(text(v, "\"X-Internal-Ip\"")?)
                .map_err(|why| format!("the field name {why}")))),
        ),
        /// Action: replace the recipients with these.
        redirect: Vec<String> = default(Vec::new(), list(mailbox)),
    }
}

impl FilterConfig {
    /// Does the rule act at all (one action or more)?
    fn has_action(&self) -> bool {
        self.reject.is_some()
            || self.discard
            || self.hold
            || self.route.is_some()
            || !self.add_header.is_empty()
            || !self.remove_header.is_empty()
            || !self.redirect.is_empty()
    }

    /// Conditions known only at the end of data.
    pub(crate) fn needs_data(&self) -> bool {
        self.size_over.is_some()
            || !self.attachment_type.is_empty()
            || !self.attachment_ext.is_empty()
    }
}

/// Read every `[[filter]]`; `routes` are the names `route` may use.
pub(crate) fn read_filters(
    ctx: &mut Ctx,
    root: &DeTable,
    routes: Option<&[String]>,
) -> Result<Vec<FilterConfig>, Reported> {
    let Some((key, item)) = root.get_key_value("filter") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(tables) = item.get_ref() else {
        return Err(ctx.error(
            key.span().start,
            "'filter' must be written [[filter]] (double brackets), once per rule",
        ));
    };
    if tables.len() > MAX_FILTERS {
        return Err(ctx.error(
            key.span().start,
            format!("{} [[filter]] tables; at most {MAX_FILTERS}", tables.len()),
        ));
    }
    let mut out: Vec<FilterConfig> = Vec::new();
    let mut bad = false;
    for t in tables.iter() {
        let DeValue::Table(table) = t.get_ref() else {
            ctx.error(t.span().start, "each rule is a [[filter]] table");
            bad = true;
            continue;
        };
        let sec = Section::new("filter", table, t.span().start);
        super::unknown_keys(ctx, &sec, &[FilterConfig::KEYS]);
        let Ok(f) = FilterKeys::read(ctx, &sec).build() else {
            bad = true;
            continue;
        };
        let before = ctx.errors.len();
        check_rule(ctx, &sec, &f, routes);
        if out.iter().any(|o| o.name == f.name) {
            let at = sec.offset("name").unwrap_or(sec.at);
            ctx.error(
                at,
                format!(
                    "name: a rule \"{}\" is defined already; each [[filter]] needs its own name",
                    f.name
                ),
            );
        }
        if ctx.errors.len() != before {
            bad = true;
            continue;
        }
        out.push(f);
    }
    if bad { Err(Reported) } else { Ok(out) }
}

/// The checks between a rule's keys.
fn check_rule(ctx: &mut Ctx, sec: &Section, f: &FilterConfig, routes: Option<&[String]>) {
    let name = &f.name;
    if !f.has_action() {
        ctx.error(
            sec.at,
            format!(
                "[[filter]] \"{name}\" does nothing: give an action (reject, discard, hold, \
                 route, add_header, remove_header or redirect)"
            ),
        );
    }
    let terminal = [("reject", f.reject.is_some()), ("discard", f.discard)];
    let others = [
        ("hold", f.hold),
        ("route", f.route.is_some()),
        ("add_header", !f.add_header.is_empty()),
        ("remove_header", !f.remove_header.is_empty()),
        ("redirect", !f.redirect.is_empty()),
    ];
    let used: Vec<&str> = terminal
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
    if used.len() == 2 {
        ctx.error(
            sec.key_offset("discard").unwrap_or(sec.at),
            format!("[[filter]] \"{name}\": reject and discard exclude each other; keep one"),
        );
    }
    if let Some(t) = used.first()
        && let Some((o, _)) = others.iter().find(|(_, on)| *on)
    {
        ctx.error(
            sec.key_offset(o).unwrap_or(sec.at),
            format!(
                "[[filter]] \"{name}\": {o} means nothing with {t} (the message is not kept); \
                 put it in a rule of its own"
            ),
        );
    }
    if f.needs_data() {
        for k in ["add_header", "remove_header"] {
            if sec.get(k).is_some() {
                ctx.error(
                    sec.key_offset(k).unwrap_or(sec.at),
                    format!(
                        "[[filter]] \"{name}\": {k} cannot follow size_over or attachment_* \
                         conditions: those are known at the end of the message, after its \
                         header section has been written; put the header change in a rule \
                         without them"
                    ),
                );
            }
        }
    }
    if let (Some(route), Some(names)) = (&f.route, routes)
        && !names.iter().any(|n| n == route)
    {
        let known = if names.is_empty() {
            "no [[route]] has a name; add name = \"…\" to the route this rule means".to_string()
        } else {
            format!("the named routes are: {}", names.join(", "))
        };
        ctx.error(
            sec.offset("route").unwrap_or(sec.at),
            format!("route: no [[route]] is named \"{route}\"; {known}"),
        );
    }
}

/// What identifies "the same alert" for storm suppression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormKey {
    /// The envelope sender and the masked Subject (the default).
    SenderSubject,
    /// The masked Subject alone.
    Subject,
    /// The envelope sender alone.
    Sender,
}

impl StormKey {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StormKey::SenderSubject => "sender+subject",
            StormKey::Subject => "subject",
            StormKey::Sender => "sender",
        }
    }
}

impl FromStr for StormKey {
    type Err = String;
    fn from_str(s: &str) -> Result<StormKey, String> {
        match s {
            "sender+subject" => Ok(StormKey::SenderSubject),
            "subject" => Ok(StormKey::Subject),
            "sender" => Ok(StormKey::Sender),
            _ => Err(format!(
                "\"{s}\" is not a storm key; expected \"sender+subject\" (the default), \
                 \"subject\" or \"sender\""
            )),
        }
    }
}

impl Print for StormKey {
    fn toml(&self) -> Option<String> {
        Some(quote(self.as_str()))
    }
}

table! {
    /// `[storm]`: alert-storm suppression; off unless the table is there.
    pub struct StormConfig, read as StormKeys {
        /// Default 30m: how long a window lasts, from the first copy of an
        /// alert (10s to 1d).
        window: Dur = default(Dur::new(30 * MINUTE), duration(10 * SECOND, DAY)),
        /// Default 5: more copies than this in one window make a storm.
        threshold: usize = default(5, count(1, 1000)),
        /// Default 2: copies that go out at once; the rest wait for the end
        /// of the window (released if it was no storm, else summed up in one digest).
        pass: usize = default(2, count(0, 1000)),
        /// Default "sender+subject": what makes two messages the same alert.
        key: StormKey = default(StormKey::SenderSubject, parsed("\"sender+subject\"")),
        /// Default empty = every sender: only these senders' mail is counted.
        senders: Vec<Pattern> = default(Vec::new(), list(parsed("\"*@ups.lan\""))),
        /// Default 256: alerts tracked at once; the oldest is dropped first.
        max_keys: usize = default(256, count(1, 10_000)),
        /// Default 1m: how often the counts are saved (only when they changed).
        save_interval: Dur = default(Dur::new(MINUTE), duration(SECOND, DAY)),
    }
}

/// Read `[storm]` if present.
pub(crate) fn read_storm(ctx: &mut Ctx, root: &DeTable) -> Result<Option<StormConfig>, Reported> {
    if root.get("storm").is_none() {
        return Ok(None);
    }
    let empty = DeTable::new();
    let sec = super::section(ctx, root, "storm", false, &empty)?;
    super::unknown_keys(ctx, &sec, &[StormConfig::KEYS]);
    let s = StormKeys::read(ctx, &sec).build()?;
    if s.pass > s.threshold {
        return Err(ctx.error(
            sec.key_offset("pass").unwrap_or(sec.at),
            format!(
                "pass ({}) is above threshold ({}): at most threshold copies go out before a \
                 storm is called",
                s.pass, s.threshold
            ),
        ));
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn globs_match_whole_text_without_case() {
        assert!(p("*@ups.lan").matches("Alerts@UPS.lan"));
        assert!(!p("*@ups.lan").matches("a@ups.lan.evil"));
        assert!(p("UPS ? on battery").matches("ups 1 on battery"));
        assert!(p("a*b*c").matches("aXXbYYc"));
        assert!(!p("a*b*c").matches("aXXbYY"));
        assert!(p("\\*literal").matches("*literal"));
        assert!(!p("\\*literal").matches("xliteral"));
        assert!(p("*").matches(""));
        assert!(p("<>").matches("<>"));
    }

    #[test]
    fn a_hostile_glob_stays_linear() {
        let pat = p(&"*a".repeat(40));
        let text = "a".repeat(5000) + "b";
        let t = std::time::Instant::now();
        assert!(!pat.matches(&text));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn regexes_are_between_slashes() {
        assert!(p("/^UPS .* on battery$/").matches("UPS 3 on battery"));
        assert!(!p("/^ups/").matches("UPS"));
        assert!(p("/^ups/i").matches("UPS"));
        assert!(p("/battery/").matches("now on battery power"));
        let e = "/a(/".parse::<Pattern>().unwrap_err();
        assert!(e.contains("not a valid regular expression"), "{e}");
        let e = "/abc".parse::<Pattern>().unwrap_err();
        assert!(e.contains("does not end with '/'"), "{e}");
    }

    #[test]
    fn reject_replies() {
        let r: RejectReply = "550 5.7.1 No executables".parse().unwrap();
        assert_eq!(
            (r.code, r.status, r.text.as_str()),
            (550, (5, 7, 1), "No executables")
        );
        let r: RejectReply = "451 try later".parse().unwrap();
        assert_eq!((r.code, r.status), (451, (4, 7, 1)));
        assert!("250 ok".parse::<RejectReply>().is_err());
        assert!("550 4.7.1 mixed".parse::<RejectReply>().is_err());
        assert!("550".parse::<RejectReply>().is_err());
    }
}
