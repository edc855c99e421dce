//! The rule engine of `[[filter]]`, and alert-storm suppression's pure
//! parts: what a rule matches, when it can decide, and what the rules
//! decided for a message so far ([`Verdict`]). No I/O and no state beyond
//! one message: the listener asks at each point of a transaction, the
//! queue stores what the verdict says (hold, route), delivery honours it.
//!
//! A rule decides at the earliest point where every one of its
//! conditions is known ([`Stage`]): the client network at connect; the
//! authenticated user and the sender at MAIL; a recipient at RCPT; header
//! fields and the Subject at the end of the header section; the size and
//! attachments at the end of data. Rules deciding at the same point run
//! in file order; a reject or a discard ends the evaluation.
//!
//! # Layout
//!
//! - `mod.rs` (here): [`Rules`], [`Stage`], [`Facts`], [`Verdict`].
//! - `mime.rs`: [`Scanner`], the streaming reader of the header section and
//!   of MIME part headers (types and file names), bounded, never the body.
//! - `subject.rs`: [`normalize_subject`], the storm key's Subject with
//!   digits, dates and hex ids masked.
//! - `explain.rs`: [`explain`], what `postern filter test` prints.
//! - `storm.rs`: [`storm::Table`], the capped table of alert windows, its
//!   saved form and the digest's text.
//!
//! Uses `config` (the rules as read) and `smtp` (addresses, header
//! helpers); nothing on its own floor or above.

mod explain;
mod mime;
pub mod storm;
mod subject;

use std::net::IpAddr;
use std::sync::Arc;

pub use explain::{Trial, explain};
pub use mime::{Attachment, MAX_ATTACHMENTS, Scan, Scanner};
pub use subject::normalize_subject;

use crate::config::{FilterConfig, HeaderLine, RejectReply};
use crate::smtp::Address;

/// The points of a transaction where rules decide, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The client connected (its network is known).
    Connect,
    /// MAIL FROM (the sender and any AUTH user are known).
    Mail,
    /// Each RCPT TO.
    Rcpt,
    /// The end of the message's header section.
    Headers,
    /// The end of data (size and attachments are known).
    Data,
}

impl Stage {
    /// For logs and `filter test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Headers => "end of headers",
            Stage::Data => "end of data",
        }
    }
}

/// One rule, with the point where it decides.
#[derive(Debug, Clone)]
pub struct Rule {
    /// As configured.
    pub cfg: FilterConfig,
    /// Where it decides.
    pub stage: Stage,
}

impl Rule {
    fn new(cfg: FilterConfig) -> Rule {
        let stage = if cfg.needs_data() {
            Stage::Data
        } else if !cfg.header.is_empty() || !cfg.subject.is_empty() {
            Stage::Headers
        } else if !cfg.recipient.is_empty() {
            Stage::Rcpt
        } else if !cfg.sender.is_empty() || !cfg.user.is_empty() {
            Stage::Mail
        } else {
            Stage::Connect
        };
        Rule { cfg, stage }
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// `Ok` when every condition holds for `f`, else the first that does
    /// not (its key). `rcpt`: at RCPT, the recipient being decided; later,
    /// a recipient condition holds when any recipient matches.
    pub fn check(&self, f: &Facts, rcpt: Option<&Address>) -> Result<(), &'static str> {
        let c = &self.cfg;
        if !c.client.is_empty() && !c.client.iter().any(|n| n.contains(&f.client)) {
            return Err("client");
        }
        if !c.user.is_empty() && !f.user.is_some_and(|u| c.user.iter().any(|p| p.matches(u))) {
            return Err("user");
        }
        if !c.sender.is_empty() {
            let s = f.sender.map_or("<>", Address::as_str);
            if !c.sender.iter().any(|p| p.matches(s)) {
                return Err("sender");
            }
        }
        if !c.recipient.is_empty() {
            let hit = |a: &Address| c.recipient.iter().any(|p| p.matches(a.as_str()));
            let any = match rcpt {
                Some(r) => hit(r),
                None => f.rcpts.iter().any(hit),
            };
            if !any {
                return Err("recipient");
            }
        }
        if self.stage >= Stage::Headers {
            let Some(scan) = f.scan else {
                return Err("header");
            };
            if !c.subject.is_empty() {
                let s = scan.subject.as_deref().unwrap_or("");
                if !c.subject.iter().any(|p| p.matches(s)) {
                    return Err("subject");
                }
            }
            if !c.header.is_empty()
                && !c
                    .header
                    .iter()
                    .any(|h| scan.fields(&h.name).any(|v| h.pattern.matches(v)))
            {
                return Err("header");
            }
            if self.stage == Stage::Data {
                if let Some(limit) = c.size_over
                    && f.size <= limit.bytes
                {
                    return Err("size_over");
                }
                if !c.attachment_type.is_empty()
                    && !scan
                        .attachments
                        .iter()
                        .any(|a| c.attachment_type.iter().any(|p| p.matches(&a.content_type)))
                {
                    return Err("attachment_type");
                }
                if !c.attachment_ext.is_empty()
                    && !scan.attachments.iter().any(|a| {
                        a.extension()
                            .is_some_and(|e| c.attachment_ext.iter().any(|x| x.0 == e))
                    })
                {
                    return Err("attachment_ext");
                }
            }
        }
        Ok(())
    }
}

/// What is known about the transaction when a stage is decided.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The client's address (IPv4-mapped made IPv4).
    pub client: IpAddr,
    /// Who logged in with AUTH.
    pub user: Option<&'a str>,
    /// The envelope sender (`None`: `<>`).
    pub sender: Option<&'a Address>,
    /// The recipients accepted so far.
    pub rcpts: &'a [Address],
    /// From the end of headers on: what the scanner found.
    pub scan: Option<&'a Scan>,
    /// At the end of data: the message's size.
    pub size: u64,
}

/// A rule that ended the evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Refuse with this reply (the rule's name first).
    Reject(String, RejectReply),
    /// Accept and drop (the rule's name).
    Discard(String),
}

/// What the rules decided for one message so far. Empty when no rule
/// matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// A reject or a discard: nothing else applies.
    pub stop: Option<Stop>,
    /// Held by this rule.
    pub hold: Option<String>,
    /// Delivered over this named route (the first rule that says so).
    pub route: Option<String>,
    /// Fields to add at the end of the header section.
    pub add_header: Vec<HeaderLine>,
    /// Field names to remove (lowercased).
    pub remove_header: Vec<String>,
    /// The recipients become these (the first rule that says so).
    pub redirect: Option<Vec<String>>,
    /// The names of the rules that matched, in the order they did.
    pub matched: Vec<String>,
}

impl Verdict {
    /// Does the message stay as it came (nothing to hold, route, edit)?
    pub fn is_plain(&self) -> bool {
        self.stop.is_none()
            && self.hold.is_none()
            && self.route.is_none()
            && self.add_header.is_empty()
            && self.remove_header.is_empty()
            && self.redirect.is_none()
    }

    fn apply(&mut self, rule: &Rule) {
        let c = &rule.cfg;
        self.matched.push(c.name.clone());
        if let Some(r) = &c.reject {
            self.stop = Some(Stop::Reject(c.name.clone(), r.clone()));
            return;
        }
        if c.discard {
            self.stop = Some(Stop::Discard(c.name.clone()));
            return;
        }
        self.apply_to_message(c);
        if self.redirect.is_none() && !c.redirect.is_empty() {
            self.redirect = Some(c.redirect.clone());
        }
    }

    /// What a matching rule does to the message as a whole, whatever
    /// recipient it matched for: hold, route, header changes.
    fn apply_to_message(&mut self, c: &FilterConfig) {
        if c.hold && self.hold.is_none() {
            self.hold = Some(c.name.clone());
        }
        if self.route.is_none() {
            self.route.clone_from(&c.route);
        }
        self.add_header.extend(c.add_header.iter().cloned());
        for h in &c.remove_header {
            let h = h.to_ascii_lowercase();
            if !self.remove_header.contains(&h) {
                self.remove_header.push(h);
            }
        }
    }
}

/// What one recipient's RCPT-stage rules decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// Take it as it is.
    Accept,
    /// Refuse it with this reply (rule name first).
    Reject(String, RejectReply),
    /// Accept it at the protocol level and drop it (rule name).
    Discard(String),
    /// Take these addresses instead (rule name first).
    Redirect(String, Vec<String>),
}

/// Every `[[filter]]`, ready to evaluate; cheap to share.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Arc<[Rule]>,
}

impl Rules {
    /// From the config's rules, in file order.
    pub fn new(cfgs: &[FilterConfig]) -> Rules {
        Rules {
            rules: cfgs.iter().cloned().map(Rule::new).collect(),
        }
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Some rule decides at the end of headers or of data: the message
    /// must be scanned.
    pub fn needs_scan(&self) -> bool {
        self.rules.iter().any(|r| r.stage >= Stage::Headers)
    }

    /// Header fields (lowercased) whose values some rule looks at.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in self.rules.iter() {
            for h in &r.cfg.header {
                let n = h.name.to_ascii_lowercase();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    /// Some rule changes the header section: the intake keeps the
    /// section back until the end-of-headers rules have decided.
    pub fn edits_headers(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.cfg.add_header.is_empty() || !r.cfg.remove_header.is_empty())
    }

    /// Run the rules that decide at `stage` (not at RCPT: see
    /// [`Rules::rcpt`]) into `v`, unless it is stopped already.
    pub fn decide(&self, stage: Stage, f: &Facts, v: &mut Verdict) {
        debug_assert!(stage != Stage::Rcpt);
        for r in self.rules.iter().filter(|r| r.stage == stage) {
            if v.stop.is_some() {
                return;
            }
            if r.check(f, None).is_ok() {
                v.apply(r);
            }
        }
    }

    /// Run the RCPT-stage rules for one recipient: what happens to it, and
    /// (in `v`) what its rules decided for the whole message (hold, route,
    /// header changes).
    pub fn rcpt(&self, f: &Facts, rcpt: &Address, v: &mut Verdict) -> RcptDecision {
        if v.stop.is_some() {
            return RcptDecision::Accept;
        }
        for r in self.rules.iter().filter(|r| r.stage == Stage::Rcpt) {
            if r.check(f, Some(rcpt)).is_err() {
                continue;
            }
            let c = &r.cfg;
            v.matched.push(c.name.clone());
            if let Some(reply) = &c.reject {
                return RcptDecision::Reject(c.name.clone(), reply.clone());
            }
            if c.discard {
                return RcptDecision::Discard(c.name.clone());
            }
            // What is not about this recipient is about the message.
            v.apply_to_message(c);
            if !c.redirect.is_empty() {
                return RcptDecision::Redirect(c.name.clone(), c.redirect.clone());
            }
        }
        RcptDecision::Accept
    }
}

#[cfg(test)]
pub(crate) mod tests;
