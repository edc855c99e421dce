//! AUTH as a phase of the session (RFC 4954): the PLAIN and LOGIN
//! exchanges, from the AUTH command through the 334 prompts to a name and
//! password to check. Bytes in, the next prompt or the credentials out; the
//! check itself (a slow password hash) is the handler's, through
//! `auth::Users`.
//!
//! Uses `auth` (the base64 decoders).

use crate::auth::{decode_line, decode_plain};

/// A name and password the client sent. The password never reaches a log:
/// `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account name.
    pub name: String,
    /// The password, as sent.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("password", &"…")
            .finish()
    }
}

/// Where an exchange is: which response we wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// PLAIN without an initial response: its one response.
    Plain,
    /// LOGIN: the user name.
    LoginUser,
    /// LOGIN: the password, the name (base64) already sent.
    LoginPassword {
        /// The user name line, base64 as sent.
        user: Vec<u8>,
    },
}

/// What comes of a step of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Send this 334 prompt (base64 text, empty for PLAIN) and wait for the
    /// response in this state.
    Prompt(&'static str, Exchange),
    /// The client sent `*`.
    Cancelled,
    /// Credentials to check.
    Check(Credentials),
    /// The responses do not decode: a failed login.
    Malformed,
}

/// LOGIN's prompts, "Username:" and "Password:" in base64.
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

/// Start an exchange for `mechanism` (the session let only `PLAIN` and
/// `LOGIN` through) with the AUTH command's initial response, if any.
pub fn start(mechanism: &str, initial: Option<String>) -> Progress {
    // RFC 4954 §4: "=" is an empty initial response.
    let initial = initial.map(|i| if i == "=" { Vec::new() } else { i.into_bytes() });
    match (mechanism, initial) {
        ("PLAIN", Some(resp)) => plain(&resp),
        ("PLAIN", None) => Progress::Prompt("", Exchange::Plain),
        (_, Some(user)) => Progress::Prompt(PASSWORD, Exchange::LoginPassword { user }),
        (_, None) => Progress::Prompt(USERNAME, Exchange::LoginUser),
    }
}

/// The client's response line in `state`; `None` for a line too long to
/// be a response (it fails as malformed).
pub fn respond(state: Exchange, line: Option<&[u8]>) -> Progress {
    let line = line.unwrap_or_default();
    if line == b"*" {
        return Progress::Cancelled;
    }
    match state {
        Exchange::Plain => plain(line),
        Exchange::LoginUser => Progress::Prompt(
            PASSWORD,
            Exchange::LoginPassword {
                user: line.to_vec(),
            },
        ),
        Exchange::LoginPassword { user } => {
            let decoded = decode_line(&user).and_then(|u| {
                let name = String::from_utf8(u).map_err(|_| crate::auth::AuthError::Malformed)?;
                Ok((name, decode_line(line)?))
            });
            match decoded {
                Ok((name, password)) => Progress::Check(Credentials { name, password }),
                Err(_) => Progress::Malformed,
            }
        }
    }
}

fn plain(resp: &[u8]) -> Progress {
    match decode_plain(resp) {
        Ok((name, password)) => Progress::Check(Credentials { name, password }),
        Err(_) => Progress::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn creds(name: &str, password: &str) -> Progress {
        Progress::Check(Credentials {
            name: name.into(),
            password: password.as_bytes().to_vec(),
        })
    }

    #[test]
    fn plain_with_and_without_an_initial_response() {
        assert_eq!(start("PLAIN", Some(b64(b"\0dev\0pw"))), creds("dev", "pw"));
        let Progress::Prompt("", state) = start("PLAIN", None) else {
            panic!()
        };
        assert_eq!(
            respond(state.clone(), Some(b64(b"\0dev\0pw").as_bytes())),
            creds("dev", "pw")
        );
        assert_eq!(respond(state.clone(), Some(b"*")), Progress::Cancelled);
        assert_eq!(respond(state.clone(), Some(b"!!")), Progress::Malformed);
        assert_eq!(respond(state, None), Progress::Malformed);
        assert_eq!(start("PLAIN", Some("=".into())), Progress::Malformed);
    }

    #[test]
    fn login_asks_for_the_name_then_the_password() {
        let Progress::Prompt(USERNAME, state) = start("LOGIN", None) else {
            panic!()
        };
        let Progress::Prompt(PASSWORD, state) = respond(state, Some(b64(b"dev").as_bytes())) else {
            panic!()
        };
        assert_eq!(
            respond(state.clone(), Some(b64(b"pw").as_bytes())),
            creds("dev", "pw")
        );
        assert_eq!(respond(state, Some(b"*")), Progress::Cancelled);
        // The name as the initial response.
        let Progress::Prompt(PASSWORD, state) = start("LOGIN", Some(b64(b"dev"))) else {
            panic!()
        };
        assert_eq!(
            respond(state, Some(b64(b"pw").as_bytes())),
            creds("dev", "pw")
        );
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let c = Credentials {
            name: "dev".into(),
            password: b"s3cret".to_vec(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
