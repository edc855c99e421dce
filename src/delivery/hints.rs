//! What upstream replies mean for us: quota and rate replies that providers
//! send as 5xx but that clear up by themselves (deferred, not bounced), and
//! known provider refusals that a config change fixes (a one-line hint
//! naming the key).

use crate::smtp::Reply;

/// True for a reply that says "later", whatever its code: daily quotas,
/// rate limits, too many logins (Gmail 550 5.4.5, 454 4.7.0; Exchange
/// Online 4.3.2/5.2.x "submission quota"). Bouncing these loses alerts
/// that would have gone out an hour later.
pub fn is_quota(r: &Reply) -> bool {
    let text = r.to_log_string().to_ascii_lowercase();
    let status = r.status.map(|s| (s.class, s.subject, s.detail));
    matches!(status, Some((_, 4, 5))) // 5.4.5 / 4.4.5: quota exceeded (Gmail)
        || text.contains("quota")
        || text.contains("too many login")
        || text.contains("rate limit")
        || text.contains("ratelimit")
        || text.contains("too many messages")
        || text.contains("try again later")
        || text.contains("sending limit")
        || text.contains("submission rate")
}

/// A one-line hint for a known provider refusal, naming what to change.
pub fn hint(r: &Reply) -> Option<&'static str> {
    let text = r.to_log_string().to_ascii_lowercase();
    let st = r.status.map(|s| (s.class, s.subject, s.detail));
    if text.contains("sendasdenied") || matches!(st, Some((5, 2, 252))) {
        return Some(
            "the login may not send as this sender: set rewrite_sender = \"<the login mailbox>\" and rewrite_from = true",
        );
    }
    if matches!(st, Some((5, 7, 30)))
        || text.contains("basic authentication is not supported")
        || text.contains("basic authentication is disabled")
    {
        return Some(
            "password AUTH is switched off for this mailbox: use auth = \"xoauth2\" (config/examples/microsoft365-xoauth2.toml) or a connector with client_cert",
        );
    }
    if matches!(st, Some((5, 7, 9))) || text.contains("application-specific password") {
        return Some(
            "Gmail wants an app password: put it in password_file (myaccount.google.com/apppasswords)",
        );
    }
    if matches!(st, Some((5, 7, 139))) || text.contains("smtpclientauthentication is disabled") {
        return Some(
            "SMTP AUTH is disabled for this mailbox or tenant: enable Authenticated SMTP, or use auth = \"xoauth2\" / a connector",
        );
    }
    if matches!(st, Some((5, 7, 8)))
        || text.contains("username and password not accepted")
        || text.contains("authentication credentials invalid")
    {
        return Some(
            "bad credentials: check username and password_file (Gmail: an app password; xoauth2: the token's account)",
        );
    }
    if (matches!(st, Some((5, 7, 1))) && (text.contains("from") || text.contains("sender")))
        || text.contains("header from does not match")
        || text.contains("not owned by user")
    {
        return Some(
            "the From header does not match the login: set rewrite_from = true with rewrite_sender = \"<the login mailbox>\"",
        );
    }
    if text.contains("message-id") {
        return Some(
            "the message lacks a valid Message-ID (postern adds one when missing; check the device)",
        );
    }
    None
}

/// In plain words, what a refusal means for the sender and what to do,
/// for the failure report's text: the provider hint when one matches,
/// else what its enhanced status usually means.
pub fn advice(r: &Reply) -> Option<String> {
    if let Some(h) = hint(r) {
        return Some(format!(
            "the relay's administrator must fix its settings: {h}"
        ));
    }
    let st = r.status?;
    let text: &str = match (st.subject, st.detail) {
        (1, 0 | 1 | 3) => {
            "the receiving server says this address does not exist: check its spelling"
        }
        (1, 2) => {
            "this domain cannot be reached (it does not exist, or the relay has no route for it): check the domain"
        }
        (1, 10) => "the recipient's domain accepts no mail at all (null MX)",
        (2, 1) => "the recipient's mailbox is disabled: reach them another way",
        (2, 2) => "the recipient's mailbox is full: they must make room; send it again later",
        (2, 3) | (3, 4) => "the message is too big for the receiving server: send it smaller",
        (4, 6) => "a mail loop: the message went round between servers; check forwarding rules",
        (6, _) => "the receiving server refused the message's content or format",
        (7, 1) => {
            "the receiving server refused it by policy (a spam filter, or the sender is not allowed there): its reply says why"
        }
        (7, _) => {
            "the receiving server refused it for a security or policy reason: its reply says why"
        }
        _ => return None,
    };
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::EnhancedStatus;

    fn r(code: u16, st: (u8, u16, u16), text: &str) -> Reply {
        Reply::new(code, EnhancedStatus::new(st.0, st.1, st.2), text)
    }

    #[test]
    fn quota_replies_are_recognised() {
        assert!(is_quota(&r(
            550,
            (5, 4, 5),
            "Daily user sending limit exceeded."
        )));
        assert!(is_quota(&r(
            554,
            (5, 2, 0),
            "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
        )));
        assert!(is_quota(&r(
            454,
            (4, 7, 0),
            "Too many login attempts, please try again later."
        )));
        assert!(!is_quota(&r(550, (5, 1, 1), "no such user")));
    }

    #[test]
    fn known_refusals_get_a_hint_naming_the_key() {
        let cases = [
            (
                r(554, (5, 2, 252), "SendAsDenied; x not allowed to send as y"),
                "rewrite_sender",
            ),
            (
                r(535, (5, 7, 8), "Username and Password not accepted"),
                "password_file",
            ),
            (
                r(534, (5, 7, 9), "Application-specific password required"),
                "password_file",
            ),
            (
                r(
                    550,
                    (5, 7, 30),
                    "Basic authentication is not supported for Client Submission",
                ),
                "xoauth2",
            ),
            (
                r(550, (5, 7, 1), "header from does not match MAIL FROM"),
                "rewrite_from",
            ),
        ];
        for (reply, key) in cases {
            let h = hint(&reply).unwrap_or_else(|| panic!("no hint for {reply:?}"));
            assert!(h.contains(key), "{h}");
        }
        assert_eq!(hint(&r(550, (5, 1, 1), "no such user")), None);
    }

    #[test]
    fn advice_says_what_to_do_in_words() {
        let a = advice(&r(550, (5, 1, 1), "no such user")).unwrap();
        assert!(a.contains("does not exist"), "{a}");
        let a = advice(&r(552, (5, 2, 2), "mailbox full")).unwrap();
        assert!(a.contains("mailbox is full"), "{a}");
        // A provider hint wins, and says who must act.
        let a = advice(&r(535, (5, 7, 139), "SmtpClientAuthentication is disabled")).unwrap();
        assert!(a.contains("administrator") && a.contains("xoauth2"), "{a}");
        assert_eq!(advice(&r(554, (5, 0, 0), "no")), None);
        assert_eq!(advice(&Reply::plain(554, "no")), None);
    }
}
