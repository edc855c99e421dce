//! Listener AUTH accounts (`[[user]]`): Argon2id password hashes (PHC
//! strings, as `postern passwd` prints them), their verification, and the
//! decoding of AUTH PLAIN / LOGIN responses (RFC 4616, the LOGIN draft).
//!
//! Verification is deliberately expensive (19 MiB, 2 passes): it runs on a
//! blocking thread, one at a time, so an AUTH flood costs one hash's memory
//! and one core, never the event loop.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;

use crate::config::{AddressPattern, HashFormatError, UserConfig};

/// Argon2id cost for new hashes: OWASP's minimum (19 MiB, t=2, p=1); small
/// enough for the ARM board, where one check takes a few tenths of a second.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
/// Longest password accepted (from `postern passwd` or AUTH).
pub const MAX_PASSWORD: usize = 256;

/// Why a hash or an AUTH response is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a PHC string at all.
    #[error("not a password hash in PHC format ($argon2id$v=19$m=...,t=...,p=...$salt$hash)")]
    NotPhc,
    /// A PHC string of another algorithm.
    #[error("the hash uses {0}; only argon2id is accepted")]
    Algorithm(String),
    /// Parameters out of range.
    #[error("the hash's parameters are unusable: {0}")]
    Params(String),
    /// The AUTH response is not valid base64 or not the expected shape.
    #[error("malformed AUTH response")]
    Malformed,
    /// Password empty, too long, or with a NUL.
    #[error("the password must be 1 to {MAX_PASSWORD} bytes without NUL")]
    Password,
    /// The system's random source failed.
    #[error("no randomness for the salt: {0}")]
    Random(String),
}

/// Is `s` an Argon2id hash we can verify, with sane parameters? The rules
/// live with the config, which checks every `[[user]]` hash on load.
pub fn check_hash_format(s: &str) -> Result<(), AuthError> {
    crate::config::check_hash_format(s).map_err(|e| match e {
        HashFormatError::Algorithm(a) => AuthError::Algorithm(a),
        HashFormatError::Params(p) => AuthError::Params(p),
        HashFormatError::NotPhc => AuthError::NotPhc,
    })
}

/// A new Argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    check_password(password)?;
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| AuthError::Params(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Params(e.to_string()))
}

fn check_password(password: &[u8]) -> Result<(), AuthError> {
    if password.is_empty() || password.len() > MAX_PASSWORD || password.contains(&0) {
        return Err(AuthError::Password);
    }
    Ok(())
}

/// Does `password` match `phc`? False for anything malformed.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    if check_password(password).is_err() || check_hash_format(phc).is_err() {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
        Err(_) => false,
    }
}

/// Why `postern passwd` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    /// Reading the terminal or stdin failed.
    #[error("cannot read the password: {0}")]
    Io(#[from] std::io::Error),
    /// The two entries differ.
    #[error("the passwords do not match; nothing printed")]
    Mismatch,
    /// Empty, too long, NUL.
    #[error("{0}")]
    Auth(#[from] AuthError),
}

/// `postern passwd`: read a password (twice, without echo, on a terminal;
/// the first line of stdin otherwise) and return its hash.
pub fn passwd_from_stdin() -> Result<String, PasswdError> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let read_line = || -> Result<Vec<u8>, PasswdError> {
        let mut line = Vec::new();
        stdin.lock().read_until(b'\n', &mut line)?;
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(line)
    };
    if !stdin.is_terminal() {
        return Ok(hash_password(&read_line()?)?);
    }
    let ask = |prompt: &str| -> Result<Vec<u8>, PasswdError> {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let fd = std::io::stdin();
        let old = rustix::termios::tcgetattr(&fd).map_err(std::io::Error::from)?;
        let mut quiet = old.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet)
            .map_err(std::io::Error::from)?;
        let line = read_line();
        // Echo back on whatever happened.
        let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &old);
        eprintln!();
        line
    };
    let first = ask("Password: ")?;
    let again = ask("Again: ")?;
    if first != again {
        return Err(PasswdError::Mismatch);
    }
    Ok(hash_password(&first)?)
}

/// The accounts, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<UserConfig>,
}

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The account name.
    pub name: String,
    /// Senders this account may use; empty = any.
    pub allowed_senders: Vec<AddressPattern>,
}

/// One verification at a time: each costs [`M_COST_KIB`] of memory.
static VERIFY_GATE: smol::lock::Semaphore = smol::lock::Semaphore::new(1);

impl Users {
    /// From the config's `[[user]]` list.
    pub fn new(users: &[UserConfig]) -> Users {
        Users {
            users: users.to_vec(),
        }
    }

    /// No accounts configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check a name and password off the event loop. An unknown name costs
    /// the same as a wrong password (verified against a dummy hash), so
    /// timing does not tell which names exist.
    pub async fn check(&self, name: &str, password: &[u8]) -> Option<Login> {
        let user = self.users.iter().find(|u| u.name == name);
        let phc = match user {
            Some(u) => u.password_hash.clone(),
            None => DUMMY_HASH.to_string(),
        };
        let password = password.to_vec();
        let _gate = VERIFY_GATE.acquire().await;
        let ok = smol::unblock(move || verify(&phc, &password)).await;
        match user {
            Some(u) if ok => Some(Login {
                name: u.name.clone(),
                allowed_senders: u.allowed_senders.clone(),
            }),
            _ => None,
        }
    }
}

/// A valid Argon2id hash of a random password nobody knows, with the
/// default cost, for timing-equal refusals of unknown names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4Q8ykZ5fYt8ZJm3iEp0yKq4nQZ3dQqv0m5cJ3r2eD8I";

/// Decode an AUTH PLAIN response (base64 of `authzid NUL authcid NUL
/// passwd`). An authzid other than empty or the authcid is refused: a
/// device has no business acting for another user.
pub fn decode_plain(b64: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| AuthError::Malformed)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let authc = std::str::from_utf8(authc).map_err(|_| AuthError::Malformed)?;
    if authc.is_empty() || (!authz.is_empty() && authz != authc.as_bytes()) {
        return Err(AuthError::Malformed);
    }
    Ok((authc.to_string(), pass.to_vec()))
}

/// Decode one base64 line of AUTH LOGIN (user name or password).
pub fn decode_line(b64: &[u8]) -> Result<Vec<u8>, AuthError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_is_well_formed() {
        assert_eq!(check_hash_format(DUMMY_HASH), Ok(()));
    }

    #[test]
    fn hash_then_verify() {
        let h = hash_password(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(check_hash_format(&h), Ok(()));
        assert!(verify(&h, b"s3cret"));
        assert!(!verify(&h, b"s3cres"));
        assert!(!verify(&h, b""));
        // Two hashes of one password differ (random salt).
        assert_ne!(h, hash_password(b"s3cret").unwrap());
    }

    #[test]
    fn other_schemes_and_huge_costs_are_refused() {
        assert_eq!(check_hash_format("plain"), Err(AuthError::NotPhc));
        assert!(matches!(
            check_hash_format("$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            Err(AuthError::Algorithm(_))
        ));
        assert!(matches!(
            check_hash_format(
                "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
            ),
            Err(AuthError::Params(_))
        ));
    }

    #[test]
    fn plain_responses() {
        let enc = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            decode_plain(enc(b"\0dev\0pw").as_bytes()),
            Ok(("dev".into(), b"pw".to_vec()))
        );
        assert_eq!(
            decode_plain(enc(b"dev\0dev\0pw").as_bytes()),
            Ok(("dev".into(), b"pw".to_vec()))
        );
        assert_eq!(
            decode_plain(enc(b"admin\0dev\0pw").as_bytes()),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            decode_plain(enc(b"dev\0pw").as_bytes()),
            Err(AuthError::Malformed)
        );
        assert_eq!(decode_plain(b"!!!"), Err(AuthError::Malformed));
    }
}
