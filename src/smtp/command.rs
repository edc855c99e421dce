//! Client commands (RFC 5321 §4.1), parsed from one line without its CRLF.

use super::address::{Address, AddressError, check_domain_name};
pub use super::envelope::BodyType;
use super::envelope::{Envelope, Notify, Ret, ReversePath};
use super::xtext;

/// Longest command line accepted, CRLF included. RFC 5321 §4.5.3.1.4 gives
/// 512; RFC 1870 (SIZE) and RFC 6152 (BODY) add parameters to MAIL, so we
/// allow one more 512 for extensions, as Postfix does with its line limit.
pub const MAX_COMMAND_LINE: usize = 1024;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `EHLO domain-or-literal`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]`; `from` is `None` for `<>`.
    Mail {
        /// The reverse path; `None` is the null sender.
        from: Option<Address>,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> [params]`
    Rcpt {
        /// The forward path.
        to: Address,
        /// ESMTP parameters (RFC 3461 DSN).
        params: RcptParams,
    },
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy(String),
    /// `HELP [string]`
    Help,
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954)
    Auth {
        /// Mechanism name, upper-cased.
        mechanism: String,
        /// Initial response, still base64.
        initial: Option<String>,
    },
}

/// ESMTP parameters on MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152).
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461): how much of the message a failure report returns.
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), as given (valid xtext, at most
    /// [`MAX_ENVID`] characters).
    pub envid: Option<String>,
}

impl MailParams {
    /// An envelope from `from` with no recipients yet, with the MAIL
    /// parameters that travel with the message.
    pub fn envelope(&self, from: ReversePath) -> Envelope {
        Envelope {
            from,
            rcpts: Vec::new(),
            body: self.body,
            smtputf8: self.smtputf8,
            ret: self.ret,
            envid: self.envid.clone(),
        }
    }

    /// Were any parameters given that only EHLO allows?
    pub fn any(&self) -> bool {
        self.size.is_some()
            || self.smtputf8
            || self.body != BodyType::SevenBit
            || self.ret.is_some()
            || self.envid.is_some()
    }
}

/// ESMTP parameters on RCPT TO (RFC 3461 DSN).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NOTIFY=`: which reports the sender wants for this recipient.
    pub notify: Notify,
    /// `ORCPT=addr-type;xtext` as given (valid, at most [`MAX_ORCPT`]
    /// characters).
    pub orcpt: Option<String>,
}

impl RcptParams {
    /// Were any parameters given?
    pub fn any(&self) -> bool {
        self.notify != Notify::UNSPECIFIED || self.orcpt.is_some()
    }
}

/// Longest `ENVID=` value, as xtext (RFC 3461 §4.4: 100 characters).
pub const MAX_ENVID: usize = 100;
/// Longest `ORCPT=` value, `addr-type;xtext` (RFC 3461 §4.2: 500
/// characters).
pub const MAX_ORCPT: usize = 500;

/// Why a command line was refused; each maps to one reply (the listener's
/// `server::reply` says which).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Verb not known: 500 5.5.1.
    #[error("command unrecognized")]
    Unrecognized,
    /// Known verb, bad arguments: 501 5.5.4 with the explanation.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A MAIL/RCPT parameter we do not support: 555 5.5.4.
    #[error("parameter not supported: {0}")]
    UnknownParameter(String),
    /// The address in MAIL FROM is malformed: 501 5.1.7.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The address in RCPT TO is malformed: 501 5.1.3.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// Line is not valid UTF-8 or contains control characters: 500 5.5.2.
    #[error("invalid characters in command")]
    BadCharacters,
}

/// Longest verb we know (`STARTTLS`); anything longer is unrecognized
/// without further work.
const MAX_VERB_LEN: usize = 8;

/// Longest parameter keyword echoed back in [`CommandError::UnknownParameter`],
/// so a reply line stays well inside RFC 5321's 512 octets.
const MAX_ECHOED_PARAM: usize = 64;

/// Longest SASL mechanism name (RFC 4422 §3.1).
const MAX_MECHANISM_LEN: usize = 20;

pub(crate) const MAIL_SYNTAX: &str = "Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] \
                                       [SMTPUTF8] [RET=FULL|HDRS] [ENVID=xtext]";
const RCPT_SYNTAX: &str =
    "Syntax: RCPT TO:<address> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=rfc822;xtext]";
const AUTH_SYNTAX: &str = "Syntax: AUTH mechanism [initial-response]";

/// Parse one command line, CRLF already removed.
///
/// The caller has already bounded the line by [`MAX_COMMAND_LINE`]. Verbs
/// and parameter keywords are case-insensitive; blanks at the end of the line
/// are ignored; SP or HTAB separate the verb from its argument.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadCharacters)?;
    // NUL, CR, LF, DEL and the C1 controls have no place in any command; a
    // bare CR or LF in particular means the client's framing differs from ours.
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::BadCharacters);
    }
    let line = line.trim_end_matches(is_blank);
    let (verb, arg) = match line.split_once(is_blank) {
        Some((verb, arg)) => (verb, arg.trim_start_matches(is_blank)),
        None => (line, ""),
    };
    let mut upper = [0u8; MAX_VERB_LEN];
    if verb.len() > upper.len() {
        return Err(CommandError::Unrecognized);
    }
    for (u, b) in upper.iter_mut().zip(verb.bytes()) {
        *u = b.to_ascii_uppercase();
    }
    match upper.get(..verb.len()).unwrap_or_default() {
        b"EHLO" => hello(arg, "Syntax: EHLO hostname").map(Command::Ehlo),
        b"HELO" => hello(arg, "Syntax: HELO hostname").map(Command::Helo),
        b"MAIL" => mail(arg),
        b"RCPT" => rcpt(arg),
        b"DATA" => no_argument(arg, Command::Data, "Syntax: DATA (no argument)"),
        b"RSET" => no_argument(arg, Command::Rset, "Syntax: RSET (no argument)"),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => no_argument(arg, Command::Quit, "Syntax: QUIT (no argument)"),
        b"VRFY" if arg.is_empty() => Err(CommandError::Syntax("Syntax: VRFY address")),
        b"VRFY" => Ok(Command::Vrfy(arg.to_owned())),
        b"HELP" => Ok(Command::Help),
        b"STARTTLS" => no_argument(arg, Command::StartTls, "Syntax: STARTTLS (no argument)"),
        b"AUTH" => auth(arg),
        _ => Err(CommandError::Unrecognized),
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn no_argument(arg: &str, cmd: Command, syntax: &'static str) -> Result<Command, CommandError> {
    if arg.is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::Syntax(syntax))
    }
}

/// EHLO/HELO: any non-empty argument. Devices send bare names, names with
/// underscores, even spaces; refusing them would only lose mail. The text is
/// sanitised where it is used (the `Received:` field).
fn hello(arg: &str, syntax: &'static str) -> Result<String, CommandError> {
    if arg.is_empty() {
        Err(CommandError::Syntax(syntax))
    } else {
        Ok(arg.to_owned())
    }
}

/// `s` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Split `<path> params` (after `FROM:` / `TO:`) into the text between the
/// angle brackets and the parameter text. One space before `<` is tolerated
/// (`MAIL FROM: <a@b>` is common in the wild); a missing bracket is not. The
/// closing `>` is found outside quoted strings, so `<"a>b"@c>` is one path.
fn angle_path(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix(' ').unwrap_or(s);
    let inner = s.strip_prefix('<')?;
    let mut quoted = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == '>' && !quoted {
            end = Some(i);
            break;
        }
    }
    let end = end?;
    let path = inner.get(..end)?;
    let after = inner.get(end + 1..)?;
    if after.is_empty() {
        return Some((path, after));
    }
    // Parameters must be separated from the path by a blank.
    let params = after.strip_prefix(is_blank)?;
    Some((path, params))
}

/// The mailbox in a non-empty path, dropping a source route
/// (`@a,@b:user@c`): RFC 5321 §4.1.1.3 says to accept and ignore it.
fn mailbox(path: &str) -> Result<Address, AddressError> {
    if !path.starts_with('@') {
        return Address::parse(path);
    }
    // Route domains are plain names (no literals), so the first colon ends
    // the route.
    let (route, mailbox) = path.split_once(':').ok_or(AddressError::Domain)?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::Domain)?;
        check_domain_name(domain)?;
    }
    Address::parse(mailbox)
}

fn mail(arg: &str) -> Result<Command, CommandError> {
    let rest = strip_prefix_ci(arg, "FROM:").ok_or(CommandError::Syntax(MAIL_SYNTAX))?;
    let (path, params) = angle_path(rest).ok_or(CommandError::Syntax(MAIL_SYNTAX))?;
    let from = if path.is_empty() {
        None
    } else {
        Some(mailbox(path).map_err(CommandError::BadSender)?)
    };
    let params = mail_params(params)?;
    Ok(Command::Mail { from, params })
}

/// esmtp-keyword (RFC 5321 §4.1.2): a letter or digit, then letters, digits
/// and hyphens.
fn is_keyword(k: &str) -> bool {
    k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A keyword for [`CommandError::UnknownParameter`], cut short if needed.
fn echo_keyword(k: &str) -> String {
    // Keywords are ASCII (checked by is_keyword), so any cut is on a char
    // boundary; get() keeps that an assumption we do not have to trust.
    k.get(..MAX_ECHOED_PARAM).unwrap_or(k).to_owned()
}

/// One `keyword[=value]` parameter of MAIL or RCPT, split; `None` when the
/// keyword is not one or the value after `=` is empty.
fn keyword_value(param: &str) -> Option<(&str, Option<&str>)> {
    let (key, value) = match param.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (param, None),
    };
    (is_keyword(key) && value != Some("")).then_some((key, value))
}

/// `Ok` the first time a parameter is seen, `duplicate` after that.
fn first(seen: &mut bool, duplicate: &'static str) -> Result<(), CommandError> {
    if std::mem::replace(seen, true) {
        Err(CommandError::Syntax(duplicate))
    } else {
        Ok(())
    }
}

fn mail_params(text: &str) -> Result<MailParams, CommandError> {
    let syntax = CommandError::Syntax(MAIL_SYNTAX);
    let mut params = MailParams::default();
    let (mut size, mut body, mut utf8, mut auth) = (false, false, false, false);
    let (mut ret, mut envid) = (false, false);
    for param in text.split(is_blank).filter(|p| !p.is_empty()) {
        let (key, value) = keyword_value(param).ok_or(CommandError::Syntax(MAIL_SYNTAX))?;
        let once = |seen: &mut bool| first(seen, "Duplicate MAIL parameter");
        if key.eq_ignore_ascii_case("SIZE") {
            once(&mut size)?;
            params.size = Some(
                parse_size(value)
                    .ok_or(CommandError::Syntax("SIZE=n must be a number of octets"))?,
            );
        } else if key.eq_ignore_ascii_case("BODY") {
            once(&mut body)?;
            params.body = match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                // BINARYMIME needs CHUNKING, which we do not offer.
                Some(_) => return Err(CommandError::UnknownParameter(echo_keyword(param))),
                None => return Err(CommandError::Syntax("Syntax: BODY=7BIT|8BITMIME")),
            };
        } else if key.eq_ignore_ascii_case("SMTPUTF8") {
            once(&mut utf8)?;
            if value.is_some() {
                return Err(CommandError::Syntax("SMTPUTF8 takes no value"));
            }
            params.smtputf8 = true;
        } else if key.eq_ignore_ascii_case("AUTH") {
            // RFC 4954 §5: a server that offers AUTH must accept this
            // parameter, and one that does not trust the client behaves as if
            // it were `AUTH=<>`. We trust no one's claim about a previous hop,
            // so the value is checked for presence and otherwise ignored.
            once(&mut auth)?;
            if value.is_none() {
                return Err(syntax);
            }
        } else if key.eq_ignore_ascii_case("RET") {
            once(&mut ret)?;
            params.ret = Some(match value {
                Some(v) if v.eq_ignore_ascii_case("FULL") => Ret::Full,
                Some(v) if v.eq_ignore_ascii_case("HDRS") => Ret::Hdrs,
                _ => return Err(CommandError::Syntax("Syntax: RET=FULL or RET=HDRS")),
            });
        } else if key.eq_ignore_ascii_case("ENVID") {
            once(&mut envid)?;
            let Some(v) = value else {
                return Err(CommandError::Syntax("Syntax: ENVID=xtext"));
            };
            if v.len() > MAX_ENVID {
                return Err(CommandError::Syntax(
                    "ENVID is longer than 100 characters (RFC 3461)",
                ));
            }
            if !printable_xtext(v) {
                return Err(CommandError::Syntax(
                    "ENVID must be xtext of printable ASCII (RFC 3461)",
                ));
            }
            params.envid = Some(v.to_string());
        } else {
            return Err(CommandError::UnknownParameter(echo_keyword(key)));
        }
    }
    Ok(params)
}

/// Is `v` valid xtext whose text is printable ASCII (RFC 3461 asks that of
/// ENVID and ORCPT: they end up in report fields)?
fn printable_xtext(v: &str) -> bool {
    xtext::decode(v).is_ok_and(|b| b.iter().all(|c| (b' '..=b'~').contains(c)))
}

/// `NOTIFY=` value: `NEVER`, or one or more of `SUCCESS`, `FAILURE`,
/// `DELAY`, comma-separated.
fn notify(value: &str) -> Option<Notify> {
    let mut set = Notify::UNSPECIFIED;
    for item in value.split(',') {
        let n = if item.eq_ignore_ascii_case("NEVER") {
            Notify::NEVER
        } else if item.eq_ignore_ascii_case("SUCCESS") {
            Notify::SUCCESS
        } else if item.eq_ignore_ascii_case("FAILURE") {
            Notify::FAILURE
        } else if item.eq_ignore_ascii_case("DELAY") {
            Notify::DELAY
        } else {
            return None;
        };
        set = set.with(n)?;
    }
    (set != Notify::UNSPECIFIED).then_some(set)
}

/// `ORCPT=` value: `addr-type;xtext`, the type an atom (`rfc822`).
fn orcpt_ok(value: &str) -> bool {
    let Some((kind, addr)) = value.split_once(';') else {
        return false;
    };
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !addr.is_empty()
        && printable_xtext(addr)
}

fn rcpt_params(text: &str) -> Result<RcptParams, CommandError> {
    let mut params = RcptParams::default();
    let (mut seen_notify, mut seen_orcpt) = (false, false);
    for param in text.split(is_blank).filter(|p| !p.is_empty()) {
        let (key, value) = keyword_value(param).ok_or(CommandError::Syntax(RCPT_SYNTAX))?;
        let once = |seen: &mut bool| first(seen, "Duplicate RCPT parameter");
        if key.eq_ignore_ascii_case("NOTIFY") {
            once(&mut seen_notify)?;
            params.notify = value.and_then(notify).ok_or(CommandError::Syntax(
                "Syntax: NOTIFY=NEVER, or NOTIFY= one or more of SUCCESS,FAILURE,DELAY",
            ))?;
        } else if key.eq_ignore_ascii_case("ORCPT") {
            once(&mut seen_orcpt)?;
            let v = value.unwrap_or_default();
            if v.len() > MAX_ORCPT {
                return Err(CommandError::Syntax(
                    "ORCPT is longer than 500 characters (RFC 3461)",
                ));
            }
            if !orcpt_ok(v) {
                return Err(CommandError::Syntax(
                    "Syntax: ORCPT=addr-type;xtext, e.g. ORCPT=rfc822;user+40example.com",
                ));
            }
            params.orcpt = Some(v.to_string());
        } else {
            return Err(CommandError::UnknownParameter(echo_keyword(key)));
        }
    }
    Ok(params)
}

/// `SIZE=` value: decimal digits only (no sign, no blanks) that fit a u64.
fn parse_size(value: Option<&str>) -> Option<u64> {
    let v = value?;
    if v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    }
}

fn rcpt(arg: &str) -> Result<Command, CommandError> {
    let rest = strip_prefix_ci(arg, "TO:").ok_or(CommandError::Syntax(RCPT_SYNTAX))?;
    let (path, params) = angle_path(rest).ok_or(CommandError::Syntax(RCPT_SYNTAX))?;
    if path.is_empty() {
        return Err(CommandError::BadRecipient(AddressError::Empty));
    }
    let to = mailbox(path).map_err(CommandError::BadRecipient)?;
    let params = rcpt_params(params)?;
    Ok(Command::Rcpt { to, params })
}

/// `AUTH mechanism [initial-response]` (RFC 4954 §4).
fn auth(arg: &str) -> Result<Command, CommandError> {
    let syntax = CommandError::Syntax(AUTH_SYNTAX);
    let mut words = arg.split(is_blank).filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(syntax.clone())?;
    let mechanism_ok = mechanism.len() <= MAX_MECHANISM_LEN
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !mechanism_ok {
        return Err(syntax);
    }
    let initial = words.next();
    if words.next().is_some() {
        return Err(syntax);
    }
    // `=` alone is the empty initial response; otherwise base64's alphabet.
    // Decoding, and judging the padding, is the AUTH handler's job.
    if let Some(ir) = initial {
        let base64 = ir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if !base64 {
            return Err(CommandError::Syntax("AUTH initial response must be base64"));
        }
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, CommandError> {
        parse(line.as_bytes())
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn mail_from(line: &str) -> (Option<Address>, MailParams) {
        match p(line) {
            Ok(Command::Mail { from, params }) => (from, params),
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn rcpt_to(line: &str) -> Address {
        rcpt_with(line).0
    }

    fn rcpt_with(line: &str) -> (Address, RcptParams) {
        match p(line) {
            Ok(Command::Rcpt { to, params }) => (to, params),
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("DaTa"), Ok(Command::Data));
        assert_eq!(p("rset"), Ok(Command::Rset));
        assert_eq!(p("Quit"), Ok(Command::Quit));
        assert_eq!(p("starttls"), Ok(Command::StartTls));
        assert_eq!(p("ehlo x"), Ok(Command::Ehlo("x".into())));
        assert_eq!(mail_from("mail from:<a@b>").0, Some(addr("a@b")));
        assert_eq!(rcpt_to("rcpt to:<a@b>"), addr("a@b"));
    }

    #[test]
    fn hello_commands_keep_their_argument() {
        assert_eq!(
            p("EHLO printer.lan"),
            Ok(Command::Ehlo("printer.lan".into()))
        );
        assert_eq!(
            p("HELO [192.0.2.1]"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        // Devices send odd names; policy, not the grammar, judges them.
        assert_eq!(
            p("EHLO My_Printer 2"),
            Ok(Command::Ehlo("My_Printer 2".into()))
        );
        assert_eq!(
            p("EHLO"),
            Err(CommandError::Syntax("Syntax: EHLO hostname"))
        );
        assert_eq!(
            p("HELO   "),
            Err(CommandError::Syntax("Syntax: HELO hostname"))
        );
    }

    #[test]
    fn commands_without_arguments_refuse_one() {
        for line in ["DATA x", "RSET x", "QUIT now", "STARTTLS please"] {
            assert!(matches!(p(line), Err(CommandError::Syntax(_))), "{line:?}");
        }
        // Trailing blanks are not an argument.
        assert_eq!(p("DATA "), Ok(Command::Data));
        assert_eq!(p("QUIT\t"), Ok(Command::Quit));
    }

    #[test]
    fn optional_and_required_arguments() {
        assert_eq!(p("NOOP"), Ok(Command::Noop));
        assert_eq!(p("NOOP anything at all"), Ok(Command::Noop));
        assert_eq!(p("HELP"), Ok(Command::Help));
        assert_eq!(p("HELP MAIL"), Ok(Command::Help));
        assert_eq!(p("VRFY root"), Ok(Command::Vrfy("root".into())));
        assert_eq!(p("VRFY"), Err(CommandError::Syntax("Syntax: VRFY address")));
    }

    #[test]
    fn unknown_verbs() {
        for line in [
            "",
            "EXPN list",
            "BDAT 10 LAST",
            "HELLO",
            "STARTTLSX",
            "MAILFROM:<a@b>",
            " MAIL FROM:<a@b>",
        ] {
            assert_eq!(p(line), Err(CommandError::Unrecognized), "{line:?}");
        }
    }

    #[test]
    fn mail_from_plain_and_null_sender() {
        assert_eq!(
            mail_from("MAIL FROM:<a@example.com>"),
            (Some(addr("a@example.com")), MailParams::default())
        );
        assert_eq!(mail_from("MAIL FROM:<>"), (None, MailParams::default()));
        assert_eq!(mail_from("MAIL FROM:<root>").0, Some(addr("root")));
        assert_eq!(
            mail_from("MAIL FROM:<\"john doe\"@x>").0,
            Some(addr("\"john doe\"@x"))
        );
        // A `>` inside a quoted local part does not close the path.
        assert_eq!(
            mail_from("MAIL FROM:<\"a>b\"@x>").0,
            Some(addr("\"a>b\"@x"))
        );
    }

    #[test]
    fn one_space_after_the_colon_is_tolerated() {
        assert_eq!(mail_from("MAIL FROM: <a@b>").0, Some(addr("a@b")));
        assert_eq!(rcpt_to("RCPT TO: <a@b>"), addr("a@b"));
        assert_eq!(mail_from("MAIL FROM: <>").0, None);
    }

    #[test]
    fn angle_brackets_are_required() {
        let mail = CommandError::Syntax(MAIL_SYNTAX);
        let rcpt = CommandError::Syntax(RCPT_SYNTAX);
        assert_eq!(p("MAIL FROM:a@b"), Err(mail.clone()));
        assert_eq!(p("MAIL FROM:<a@b"), Err(mail.clone()));
        assert_eq!(p("MAIL FROM:a@b>"), Err(mail.clone()));
        assert_eq!(p("MAIL FROM:  <a@b>"), Err(mail.clone()));
        assert_eq!(p("MAIL FROM <a@b>"), Err(mail.clone()));
        assert_eq!(p("MAIL <a@b>"), Err(mail.clone()));
        assert_eq!(p("MAIL"), Err(mail.clone()));
        assert_eq!(p("MAIL FROM:<\"a>@b"), Err(mail.clone()));
        assert_eq!(p("MAIL FROM:<a@b>SIZE=10"), Err(mail));
        assert_eq!(p("RCPT TO:a@b"), Err(rcpt.clone()));
        assert_eq!(p("RCPT <a@b>"), Err(rcpt.clone()));
        assert_eq!(p("RCPT TO:<a@b"), Err(rcpt));
    }

    #[test]
    fn source_routes_are_accepted_and_dropped() {
        assert_eq!(
            mail_from("MAIL FROM:<@a.example,@b.example:user@c.example>").0,
            Some(addr("user@c.example"))
        );
        assert_eq!(
            rcpt_to("RCPT TO:<@relay.example:user@c.example>"),
            addr("user@c.example")
        );
        for line in [
            "RCPT TO:<@relay.example user@c>",
            "RCPT TO:<@relay..example:user@c>",
            "RCPT TO:<@a,b:user@c>",
            "RCPT TO:<@:user@c>",
        ] {
            assert_eq!(
                p(line),
                Err(CommandError::BadRecipient(AddressError::Domain)),
                "{line:?}"
            );
        }
        assert_eq!(
            p("RCPT TO:<@a.example:>"),
            Err(CommandError::BadRecipient(AddressError::Empty))
        );
    }

    #[test]
    fn mail_parameters() {
        let (_, params) = mail_from("MAIL FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8");
        assert_eq!(
            params,
            MailParams {
                size: Some(12345),
                body: BodyType::EightBitMime,
                smtputf8: true,
                ..MailParams::default()
            }
        );
        let (_, params) = mail_from("mail from:<a@b> body=7bit size=0");
        assert_eq!(
            params,
            MailParams {
                size: Some(0),
                body: BodyType::SevenBit,
                smtputf8: false,
                ..MailParams::default()
            }
        );
        let (_, params) = mail_from(&format!("MAIL FROM:<> SIZE={}", u64::MAX));
        assert_eq!(params.size, Some(u64::MAX));
        // Several blanks between parameters are tolerated.
        let (_, params) = mail_from("MAIL FROM:<a@b>  SMTPUTF8\tSIZE=1");
        assert_eq!(params.size, Some(1));
        assert!(params.smtputf8);
    }

    #[test]
    fn size_must_be_digits_fitting_u64() {
        let bad = CommandError::Syntax("SIZE=n must be a number of octets");
        for v in [
            "x",
            "-1",
            "+1",
            "1e6",
            "0x10",
            "18446744073709551616",
            "１２",
        ] {
            let line = format!("MAIL FROM:<a@b> SIZE={v}");
            assert_eq!(p(&line), Err(bad.clone()), "{line:?}");
        }
        assert_eq!(p("MAIL FROM:<a@b> SIZE"), Err(bad));
        // An empty value is a malformed parameter, whatever the keyword.
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE="),
            Err(CommandError::Syntax(MAIL_SYNTAX))
        );
        // A blank ends the value: what follows is another parameter.
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=1 2"),
            Err(CommandError::UnknownParameter("2".into()))
        );
    }

    #[test]
    fn bad_or_duplicate_mail_parameters() {
        assert_eq!(
            p("MAIL FROM:<a@b> BODY=BINARYMIME"),
            Err(CommandError::UnknownParameter("BODY=BINARYMIME".into()))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> BODY"),
            Err(CommandError::Syntax("Syntax: BODY=7BIT|8BITMIME"))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SMTPUTF8=yes"),
            Err(CommandError::Syntax("SMTPUTF8 takes no value"))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=1 SIZE=2"),
            Err(CommandError::Syntax("Duplicate MAIL parameter"))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> -X=1"),
            Err(CommandError::Syntax(MAIL_SYNTAX))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> =1"),
            Err(CommandError::Syntax(MAIL_SYNTAX))
        );
    }

    #[test]
    fn dsn_mail_parameters() {
        let m = mail_from("MAIL FROM:<a@b> RET=hdrs ENVID=QQ+2B314");
        assert_eq!(m.1.ret, Some(Ret::Hdrs));
        assert_eq!(m.1.envid.as_deref(), Some("QQ+2B314"));
        assert_eq!(mail_from("MAIL FROM:<a@b> RET=FULL").1.ret, Some(Ret::Full));
        assert!(mail_from("MAIL FROM:<a@b> RET=FULL").1.any());
        for bad in [
            "MAIL FROM:<a@b> RET=BODY",
            "MAIL FROM:<a@b> RET",
            "MAIL FROM:<a@b> RET=FULL RET=HDRS",
            "MAIL FROM:<a@b> ENVID=a=b",
            "MAIL FROM:<a@b> ENVID=a+2",
            "MAIL FROM:<a@b> ENVID=a+0Db",
            "MAIL FROM:<a@b> ENVID",
        ] {
            assert!(matches!(p(bad), Err(CommandError::Syntax(_))), "{bad}");
        }
        let long = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(MAX_ENVID + 1));
        assert!(matches!(p(&long), Err(CommandError::Syntax(_))));
        let at = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(MAX_ENVID));
        assert_eq!(mail_from(&at).1.envid.map(|e| e.len()), Some(MAX_ENVID));
    }

    #[test]
    fn dsn_rcpt_parameters() {
        let (to, r) = rcpt_with("RCPT TO:<a@b> NOTIFY=success,DELAY ORCPT=rfc822;x+40y.example");
        assert_eq!(to, addr("a@b"));
        assert_eq!(r.notify, Notify::SUCCESS.with(Notify::DELAY).unwrap());
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;x+40y.example"));
        assert_eq!(
            rcpt_with("RCPT TO:<a@b> NOTIFY=NEVER").1.notify,
            Notify::NEVER
        );
        assert_eq!(rcpt_with("RCPT TO:<a@b>").1, RcptParams::default());
        for bad in [
            "RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<a@b> NOTIFY=SOMETIMES",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,",
            "RCPT TO:<a@b> NOTIFY",
            "RCPT TO:<a@b> NOTIFY=DELAY NOTIFY=DELAY",
            "RCPT TO:<a@b> ORCPT=a@b",
            "RCPT TO:<a@b> ORCPT=;a@b",
            "RCPT TO:<a@b> ORCPT=rfc822;",
            "RCPT TO:<a@b> ORCPT=rfc822;a+0D+0Ab",
            "RCPT TO:<a@b> ORCPT=rfc822;a=b",
        ] {
            assert!(matches!(p(bad), Err(CommandError::Syntax(_))), "{bad}");
        }
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "x".repeat(MAX_ORCPT));
        assert!(matches!(p(&long), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn unknown_mail_parameters_are_named() {
        assert_eq!(
            p("MAIL FROM:<a@b> MTRK=1"),
            Err(CommandError::UnknownParameter("MTRK".into()))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=1 HOLDFOR=x"),
            Err(CommandError::UnknownParameter("HOLDFOR".into()))
        );
        let long = "X".repeat(200);
        assert_eq!(
            p(&format!("MAIL FROM:<a@b> {long}")),
            Err(CommandError::UnknownParameter("X".repeat(MAX_ECHOED_PARAM)))
        );
    }

    #[test]
    fn auth_mail_parameter_is_accepted_and_ignored() {
        assert_eq!(
            mail_from("MAIL FROM:<a@b> AUTH=<>").1,
            MailParams::default()
        );
        assert_eq!(
            mail_from("MAIL FROM:<a@b> AUTH=user+40example.com SIZE=5")
                .1
                .size,
            Some(5)
        );
        assert_eq!(
            p("MAIL FROM:<a@b> AUTH"),
            Err(CommandError::Syntax(MAIL_SYNTAX))
        );
    }

    #[test]
    fn bad_sender_addresses() {
        assert_eq!(
            p("MAIL FROM:<a..b@c>"),
            Err(CommandError::BadSender(AddressError::LocalPart))
        );
        assert_eq!(
            p("MAIL FROM:<a@-c>"),
            Err(CommandError::BadSender(AddressError::Domain))
        );
        let long = format!("MAIL FROM:<{}@b>", "a".repeat(300));
        assert_eq!(
            p(&long),
            Err(CommandError::BadSender(AddressError::TooLong))
        );
    }

    #[test]
    fn rcpt_to_rules() {
        assert_eq!(rcpt_to("RCPT TO:<Postmaster>"), addr("Postmaster"));
        assert_eq!(rcpt_to("RCPT TO:<用户@例子.广告>"), addr("用户@例子.广告"));
        assert_eq!(
            p("RCPT TO:<>"),
            Err(CommandError::BadRecipient(AddressError::Empty))
        );
        assert_eq!(
            p("RCPT TO:<a b@c>"),
            Err(CommandError::BadRecipient(AddressError::LocalPart))
        );
        assert_eq!(
            p("RCPT TO:<a@b> RRVS=2025-01-01T00:00:00Z"),
            Err(CommandError::UnknownParameter("RRVS".into()))
        );
        assert_eq!(
            p("RCPT TO:<a@b> !!"),
            Err(CommandError::Syntax(RCPT_SYNTAX))
        );
    }

    #[test]
    fn auth_command() {
        assert_eq!(
            p("AUTH plain"),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGFsaWNlAHNlY3JldA==".into())
            })
        );
        assert_eq!(
            p("AUTH PLAIN ="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("=".into())
            })
        );
        assert_eq!(
            p("auth xoauth2"),
            Ok(Command::Auth {
                mechanism: "XOAUTH2".into(),
                initial: None
            })
        );
        assert_eq!(p("AUTH"), Err(CommandError::Syntax(AUTH_SYNTAX)));
        assert_eq!(p("AUTH PLAIN a b"), Err(CommandError::Syntax(AUTH_SYNTAX)));
        assert_eq!(p("AUTH PL@IN"), Err(CommandError::Syntax(AUTH_SYNTAX)));
        assert_eq!(
            p(&format!("AUTH {}", "A".repeat(21))),
            Err(CommandError::Syntax(AUTH_SYNTAX))
        );
        assert_eq!(
            p("AUTH PLAIN a*b"),
            Err(CommandError::Syntax("AUTH initial response must be base64"))
        );
    }

    #[test]
    fn bad_characters() {
        for line in [
            &b"MAIL FROM:<a@b>\r"[..],
            b"MAIL FROM:<a\nb@c>",
            b"NOOP \0",
            b"DATA\x7f",
            b"EHLO \x1b[31mred",
            b"EHLO \xff\xfe",
            b"EHLO caf\xc3",
            "EHLO a\u{85}b".as_bytes(),
        ] {
            assert_eq!(parse(line), Err(CommandError::BadCharacters), "{line:?}");
        }
        // HTAB is allowed as a blank.
        assert_eq!(p("EHLO\tx"), Ok(Command::Ehlo("x".into())));
    }

    /// xorshift64: deterministic, no crate needed.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn random_lines_never_panic() {
        let alphabet = b"MAILFROM:RCPTO<>@\"\\ .,=SIZEBODY8BITMIME\tab\xc3\xa9[]:IPv6";
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (rng(&mut seed) % 80) as usize;
            let mut line: Vec<u8> = if rng(&mut seed).is_multiple_of(2) {
                b"MAIL FROM:<".to_vec()
            } else {
                b"RCPT TO:".to_vec()
            };
            for _ in 0..len {
                line.push(alphabet[(rng(&mut seed) % alphabet.len() as u64) as usize]);
            }
            let _ = parse(&line);
        }
    }
}
