//! rustls configurations, all on the `ring` provider (it cross-compiles with
//! a plain C cross compiler, unlike aws-lc-rs).
//!
//! Both configs allow TLS 1.2 and 1.3 (rustls' safe defaults): many
//! smarthosts and LAN devices still speak only 1.2. Certificates and keys
//! are PEM files, read with `rustls::pki_types::pem` (no extra crate). Build
//! each config once (at startup or reload) and share the `Arc`: the client
//! config reads the whole system trust store.
//!
//! Also the one plain-or-TLS [`Stream`] type that the listener and the
//! smarthost client hold. Uses nothing above it in the crate.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smol::io::{AsyncRead, AsyncWrite};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore};

mod describe;
mod explain;
pub use describe::{describe_cert, file_problem};
pub use explain::{Start, accept_failure, handshake_failure};

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
    /// rustls refused the material (e.g. no usable protocol version).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The private key is not the one the certificate was issued for.
    #[error(
        "{}: private key does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// Neither the system store nor the configured CA file gave a single
    /// usable trust anchor, so no server could ever be verified.
    #[error(
        "no trust anchors: the system store has no usable certificates (install ca-certificates, or set a CA file)"
    )]
    NoTrustAnchors,
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
    let roots = trust_anchors(system_roots(), extra_ca)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        // A client certificate would go here instead:
        // `.with_client_cert_resolver(Arc::new(cert_and_key(cert, key)?))`.
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Client config with an optional TLS client certificate (`client_cert`,
/// `client_key`: certificate-authenticated connectors such as Microsoft
/// 365's), verifying servers against the system roots plus `extra_ca`.
pub fn client_config_with(
    extra_ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = trust_anchors(system_roots(), extra_ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(cert_and_key(cert, key)?)),
    };
    Ok(Arc::new(config))
}

/// Client config for opportunistic TLS (`tls = "opportunistic"`, the MX
/// default): encrypts without verifying the server, because most MX hosts'
/// certificates would not verify and plain text is the alternative. Never
/// used where credentials are sent.
pub fn client_config_unverified(
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())));
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(cert_and_key(cert, key)?)),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate but still checks the handshake
/// signatures (so the session is encrypted to whoever holds that key).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Server config from a PEM certificate chain and a PEM private key.
///
/// The chain starts with the server's own certificate; intermediates may
/// follow in the same file. Clients are not asked for certificates.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_and_key = cert_and_key(cert, key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert_and_key));
    Ok(Arc::new(config))
}

/// Where distributions keep the whole trust store as one PEM bundle
/// (Debian and Raspberry Pi OS, Fedora/RHEL, Alpine/OpenWrt).
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The system's trust anchors. Read from the distribution's bundle file
/// alone when there is one: rustls-native-certs would also read every file
/// of /etc/ssl/certs, the same ~140 certificates again, and the heap that
/// costs stays mapped for the daemon's life (about 0.2 MiB of idle RSS on
/// a board). `SSL_CERT_FILE`/`SSL_CERT_DIR` still win when set.
fn system_roots() -> rustls_native_certs::CertificateResult {
    let env_set =
        std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some();
    if !env_set && let Some(bundle) = BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        return rustls_native_certs::load_certs_from_paths(Some(bundle), None);
    }
    rustls_native_certs::load_native_certs()
}

/// The system store plus `extra_ca`. The system store is best effort (a
/// board may ship without ca-certificates when only a private CA is used);
/// the extra CA file is the admin's explicit choice, so any problem with it
/// is an error.
fn trust_anchors(
    system: rustls_native_certs::CertificateResult,
    extra_ca: Option<&Path>,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();

    for err in &system.errors {
        tracing::warn!(error = %err, "cannot load some system trust anchors; skipped");
    }
    let (added, skipped) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(added, skipped, "system trust anchors loaded");

    if let Some(path) = extra_ca {
        for (n, cert) in load_certs(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|err| TlsError::Pem {
                path: path.to_owned(),
                reason: format!("certificate #{} is not a usable CA: {err}", n + 1),
            })?;
        }
    }

    if roots.is_empty() {
        return Err(TlsError::NoTrustAnchors);
    }
    Ok(roots)
}

/// A certificate chain and its private key, checked to belong together.
/// Serves the server config now and client certificates later
/// (`SingleCertAndKey` resolves both).
fn cert_and_key(cert: &Path, key: &Path) -> Result<SingleCertAndKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| TlsError::Pem {
            path: key.to_owned(),
            reason: format!("unusable private key: {err}"),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; rustls itself
        // accepts such keys, so do the same.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(SingleCertAndKey::from(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        // keys_match parses the leaf certificate: a failure here is a bad
        // certificate, not a bad key.
        Err(err) => Err(TlsError::Pem {
            path: cert.to_owned(),
            reason: format!("unusable certificate: {err}"),
        }),
    }
}

/// Every certificate in a PEM file; other PEM sections (a key bundled in
/// the same file) are skipped. No certificate at all is an error.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| pem_error(path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, err))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no certificates found (expected \"-----BEGIN CERTIFICATE-----\" blocks)"
                .to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::Pem {
            path: path.to_owned(),
            reason: "no private key found (expected an unencrypted PKCS#8, RSA or EC \
                     \"PRIVATE KEY\" block; encrypted keys are not supported)"
                .to_owned(),
        },
        other => pem_error(path, other),
    })
}

/// pki-types' own messages print byte strings as number lists; say it in
/// words an admin can act on.
fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    let reason = match err {
        pem::Error::Io(io) => format!("cannot read: {io}"),
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "PEM block not terminated (missing \"-----END {}-----\")",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM line \"{}\"",
            String::from_utf8_lossy(&line).trim_end()
        ),
        pem::Error::Base64Decode(detail) => format!("bad base64 in a PEM block: {detail}"),
        pem::Error::NoItemsFound => "nothing usable found".to_owned(),
        other => other.to_string(),
    };
    TlsError::Pem {
        path: path.to_owned(),
        reason,
    }
}

/// A connection's byte stream: plain TCP, or TLS over it (after STARTTLS,
/// or from the first byte on an implicit-TLS port). The listener and the
/// smarthost client both hold one, so STARTTLS is the same move on both
/// sides: [`Stream::take_plain`], a handshake, then the TLS stream in its
/// place.
pub enum Stream<T> {
    /// No TLS (yet).
    Plain(T),
    /// TLS, either side of it. Boxed: a TLS session is a few KiB, a
    /// plain socket a word.
    Tls(Box<futures_rustls::TlsStream<T>>),
    /// The socket went to a handshake ([`Stream::take_plain`]) and did not
    /// come back; reads and writes fail.
    Detached,
}

impl<T> Stream<T> {
    /// Take the plain socket for a TLS handshake, leaving
    /// [`Stream::Detached`]; `None` (and nothing changed) when the stream is
    /// not plain.
    pub fn take_plain(&mut self) -> Option<T> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// True once TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TLS session (version, suite, peer certificates) when TLS is on.
    pub fn tls_session(&self) -> Option<&rustls::CommonState> {
        match self {
            Stream::Tls(s) => Some(s.get_ref().1),
            _ => None,
        }
    }
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Plain",
            Stream::Tls(_) => "Tls",
            Stream::Detached => "Detached",
        })
    }
}

impl<T> From<futures_rustls::client::TlsStream<T>> for Stream<T> {
    fn from(s: futures_rustls::client::TlsStream<T>) -> Self {
        Stream::Tls(Box::new(s.into()))
    }
}

impl<T> From<futures_rustls::server::TlsStream<T>> for Stream<T> {
    fn from(s: futures_rustls::server::TlsStream<T>) -> Self {
        Stream::Tls(Box::new(s.into()))
    }
}

/// Run the server side of a TLS handshake over `io` (implicit TLS, or
/// after our 220 to STARTTLS). The caller bounds it with a timeout.
pub async fn accept<T: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<rustls::ServerConfig>,
    io: T,
) -> std::io::Result<Stream<T>> {
    let s = futures_rustls::TlsAcceptor::from(config).accept(io).await?;
    Ok(s.into())
}

fn detached() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the connection was handed to a TLS handshake that failed",
    )
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_rustls::{TlsAcceptor, TlsConnector};
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::ServerName;
    use smol::future::FutureExt as _;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::{TcpListener, TcpStream};
    use std::io;
    use std::time::Duration;

    /// Throwaway PKI in a temp dir: a CA, a server certificate it signed for
    /// `localhost` and 127.0.0.1, and an unrelated second CA.
    struct Pki {
        dir: tempfile::TempDir,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        other_ca: PathBuf,
        other_key: PathBuf,
    }

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let issuer = ca("postern test CA");
        let other = ca("unrelated CA");
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca: write("ca.pem", issuer.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
            other_key: write(
                "other-key.pem",
                KeyPair::generate().unwrap().serialize_pem(),
            ),
            dir,
        }
    }

    /// Accepts one TLS connection on `listener`, answers "hello" with
    /// "world"; connects to it with `client` as `name`; returns what the
    /// client read and the negotiated version, or the client's error.
    async fn exchange(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<([u8; 5], rustls::ProtocolVersion)> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let serve = async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"hello");
            tls.write_all(b"world").await?;
            tls.flush().await?;
            Ok::<_, io::Error>(())
        };
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let connect = async move {
            let tcp = TcpStream::connect(addr).await?;
            let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
            tls.write_all(b"hello").await?;
            tls.flush().await?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            let version = tls.get_ref().1.protocol_version().unwrap();
            Ok::<_, io::Error>((buf, version))
        };
        // The server's own result only matters when the client succeeded;
        // after a refused handshake it fails too, by design.
        let (served, connected) = smol::future::zip(serve, connect).await;
        let connected = connected?;
        served?;
        Ok(connected)
    }

    /// Runs a test body, failing instead of hanging if it stalls.
    fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
        smol::block_on(fut.or(async {
            smol::Timer::after(Duration::from_secs(10)).await;
            panic!("TLS test did not finish within 10 s");
        }))
    }

    #[test]
    fn handshake_with_extra_ca() {
        let pki = pki();
        let server = server_config(&pki.cert, &pki.key).unwrap();
        let client = client_config(Some(&pki.ca)).unwrap();
        let (reply, version) =
            bounded(exchange(server.clone(), client.clone(), "localhost")).unwrap();
        assert_eq!(&reply, b"world");
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
        // The IP address SAN verifies too.
        let (reply, _) = bounded(exchange(server, client, "127.0.0.1")).unwrap();
        assert_eq!(&reply, b"world");
    }

    #[test]
    fn server_speaks_tls12() {
        let pki = pki();
        let server = server_config(&pki.cert, &pki.key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(load_certs(&pki.ca).unwrap());
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (reply, version) = bounded(exchange(server, Arc::new(client), "localhost")).unwrap();
        assert_eq!(&reply, b"world");
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    }

    #[test]
    fn handshake_fails_without_the_issuing_ca() {
        let pki = pki();
        let server = server_config(&pki.cert, &pki.key).unwrap();
        // System roots plus an unrelated CA: nothing vouches for the server.
        let client = client_config(Some(&pki.other_ca)).unwrap();
        let err = bounded(exchange(server, client, "localhost")).unwrap_err();
        let tls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                tls,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn failed_handshakes_are_explained_in_words() {
        // An unknown issuer: say to set ca_file.
        let pki = pki();
        let server = server_config(&pki.cert, &pki.key).unwrap();
        let client = client_config(Some(&pki.other_ca)).unwrap();
        let err = bounded(exchange(server, client, "localhost")).unwrap_err();
        let text = handshake_failure(&err, Start::Implicit);
        assert!(text.contains("set ca_file"), "{text}");
        assert!(!text.contains("UnknownIssuer"), "{text}");
        // A CA certificate as the server's own, trusted through ca_file.
        let issuer = ca("self-made CA");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca-as-server.pem");
        let key = dir.path().join("ca-key.pem");
        std::fs::write(&cert, issuer.pem()).unwrap();
        std::fs::write(&key, issuer.key().serialize_pem()).unwrap();
        let server = server_config(&cert, &key).unwrap();
        let client = client_config(Some(&cert)).unwrap();
        let err = bounded(exchange(server, client, "localhost")).unwrap_err();
        let text = handshake_failure(&err, Start::Implicit);
        assert!(text.contains("CA certificate"), "{text}");
        assert!(
            !text.contains("CaUsedAsEndEntity") && !text.contains("OtherError"),
            "{text}"
        );
        // The wrong name: say which names the certificate has.
        let server = server_config(&pki.cert, &pki.key).unwrap();
        let client = client_config(Some(&pki.ca)).unwrap();
        let err = bounded(exchange(server, client, "smarthost.example")).unwrap_err();
        let text = handshake_failure(&err, Start::Starttls);
        assert!(text.contains("(it names localhost, 127.0.0.1)"), "{text}");
    }

    #[test]
    fn implicit_tls_to_a_plain_port_is_explained() {
        // A plain SMTP server where implicit TLS was expected: it greets
        // in clear, and rustls reads "220 " as a corrupt record.
        let text = bounded(async {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let serve = async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let _ = tcp.write_all(b"220 plain.test ESMTP\r\n").await;
                let mut b = [0u8; 512];
                let _ = tcp.read(&mut b).await;
            };
            let connect = async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let client = client_config(None).unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                TlsConnector::from(client)
                    .connect(name, tcp)
                    .await
                    .map(|_| ())
                    .unwrap_err()
            };
            let (_, err) = smol::future::zip(serve, connect).await;
            handshake_failure(&err, Start::Implicit)
        });
        assert!(
            text.starts_with(
                "the server did not start TLS: is this port STARTTLS (587) rather than implicit TLS (465)?"
            ),
            "{text}"
        );
        assert!(!text.contains("InvalidContentType"), "{text}");
    }

    #[test]
    fn wrong_name_is_refused() {
        let pki = pki();
        let server = server_config(&pki.cert, &pki.key).unwrap();
        let client = client_config(Some(&pki.ca)).unwrap();
        let err = bounded(exchange(server, client, "smarthost.example")).unwrap_err();
        let tls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        assert!(
            matches!(tls, Some(rustls::Error::InvalidCertificate(_))),
            "{err:?}"
        );
    }

    #[test]
    fn missing_files() {
        let pki = pki();
        let missing = pki.dir.path().join("nope.pem");
        for err in [
            client_config(Some(&missing)).unwrap_err(),
            server_config(&missing, &pki.key).unwrap_err(),
            server_config(&pki.cert, &missing).unwrap_err(),
        ] {
            match &err {
                TlsError::Pem { path, reason } => {
                    assert_eq!(path, &missing);
                    assert!(reason.starts_with("cannot read"), "{reason}");
                }
                other => panic!("expected Pem, got {other:?}"),
            }
        }
    }

    #[test]
    fn empty_pem_files() {
        let pki = pki();
        let empty = pki.dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = client_config(Some(&empty)).unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { path, reason } if path == &empty && reason.contains("no certificates")),
            "{err}"
        );
        let err = server_config(&empty, &pki.key).unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { reason, .. } if reason.contains("no certificates")),
            "{err}"
        );
        let err = server_config(&pki.cert, &empty).unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { path, reason } if path == &empty && reason.contains("no private key")),
            "{err}"
        );
        // A certificate where the key should be: still "no private key".
        let err = server_config(&pki.cert, &pki.cert).unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { reason, .. } if reason.contains("no private key")),
            "{err}"
        );
    }

    #[test]
    fn truncated_pem_is_explained() {
        let pki = pki();
        let truncated = pki.dir.path().join("truncated.pem");
        std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let err = client_config(Some(&truncated)).unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { reason, .. } if reason.contains("-----END CERTIFICATE-----")),
            "{err}"
        );
    }

    #[test]
    fn key_not_matching_certificate() {
        let pki = pki();
        let err = server_config(&pki.cert, &pki.other_key).unwrap_err();
        assert!(
            matches!(&err, TlsError::KeyMismatch { cert, key } if cert == &pki.cert && key == &pki.other_key),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn no_trust_anchors_at_all() {
        let err =
            trust_anchors(rustls_native_certs::CertificateResult::default(), None).unwrap_err();
        assert!(matches!(err, TlsError::NoTrustAnchors), "{err:?}");
        // The extra CA alone is enough.
        let pki = pki();
        let roots = trust_anchors(
            rustls_native_certs::CertificateResult::default(),
            Some(&pki.ca),
        )
        .unwrap();
        assert_eq!(roots.len(), 1);
    }
}
