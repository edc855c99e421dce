//! rustls configurations, all on the `ring` provider (it cross-compiles with
//! a plain C cross compiler, unlike aws-lc-rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong, e.g. "no certificates found".
        reason: String,
    },
    /// rustls refused the material (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every config uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client config for talking to a smarthost: the system's trust anchors
/// (rustls-native-certs) plus every certificate in `extra_ca`, TLS 1.2 and
/// 1.3, full hostname verification. System roots that fail to load are
/// logged and skipped; it is an error only if no anchor at all is left.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let _ = extra_ca;
    unimplemented!("helper: tls.rs")
}

/// Server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let _ = (cert, key);
    unimplemented!("helper: tls.rs")
}
