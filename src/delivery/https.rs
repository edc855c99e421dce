//! A minimal HTTPS client for one job: POST a form to an OAuth2 token
//! endpoint and read the reply. HTTP/1.1, `Connection: close`, rustls on
//! smol sockets; no tokio-based client (reqwest, hyper) is wanted here.
//!
//! Bounded: the reply is at most [`MAX_RESPONSE`] octets, the whole exchange
//! at most the caller's timeout.

use std::sync::Arc;
use std::time::Duration;

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::dns::Resolver;

/// Largest reply read from a token endpoint (headers and body).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Why a request failed. All are temporary for mail delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL is not `https://host[:port]/path`.
    #[error("bad URL {0}")]
    Url(String),
    /// Name resolution failed.
    #[error("{0}")]
    Dns(#[from] crate::dns::DnsError),
    /// Connect, TLS or I/O failed.
    #[error("{what} {host}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The host.
        host: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No complete reply in time.
    #[error("{0}: no reply in time")]
    Timeout(String),
    /// The reply is not HTTP or is too big.
    #[error("{host}: bad HTTP reply: {why}")]
    Bad {
        /// The host.
        host: String,
        /// What was wrong.
        why: String,
    },
}

/// A parsed reply: status and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// The parts of an `https://` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    /// Host name or IP (no brackets).
    pub host: &'a str,
    /// Port, 443 unless given.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: &'a str,
}

/// Split an `https://` URL.
pub fn parse_url(url: &str) -> Result<Url<'_>, HttpError> {
    let bad = || HttpError::Url(url.to_string());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, p) = r.split_once(']').ok_or_else(bad)?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 443,
        Some(p) => p.parse().map_err(|_| bad())?,
    };
    if host.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad());
    }
    Ok(Url { host, port, path })
}

/// POST `form` (already encoded) to `url`; the reply whatever its status.
pub async fn post_form(
    url: &str,
    form: &str,
    tls: Arc<rustls::ClientConfig>,
    resolver: &Resolver,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let u = parse_url(url)?;
    let host = u.host.to_string();
    let work = async {
        let ips = resolver.lookup_ip(u.host).await?;
        let mut last = None;
        let mut tcp = None;
        for ip in ips {
            match TcpStream::connect((ip, u.port)).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| HttpError::Io {
            what: "connect to",
            host: host.clone(),
            source: last.unwrap_or_else(|| std::io::Error::other("no address")),
        })?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| HttpError::Url(url.to_string()))?;
        let mut s = futures_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|source| HttpError::Io {
                what: "TLS with",
                host: host.clone(),
                source,
            })?;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: postern/{}\r\nAccept: application/json\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            u.path,
            if u.port == 443 {
                host.clone()
            } else {
                format!("{host}:{}", u.port)
            },
            env!("CARGO_PKG_VERSION"),
            form.len()
        );
        let io = |source| HttpError::Io {
            what: "talking to",
            host: host.clone(),
            source,
        };
        s.write_all(req.as_bytes()).await.map_err(io)?;
        s.write_all(form.as_bytes()).await.map_err(io)?;
        s.flush().await.map_err(io)?;
        let mut buf = Vec::with_capacity(4096);
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(r) = parse_response(&buf, false).map_err(|why| HttpError::Bad {
                host: host.clone(),
                why,
            })? {
                return Ok(r);
            }
            let n = match s.read(&mut tmp).await {
                Ok(n) => n,
                // Servers that close without TLS close_notify: whatever
                // arrived is all there is.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(io(e)),
            };
            if n == 0 {
                return parse_response(&buf, true)
                    .map_err(|why| HttpError::Bad {
                        host: host.clone(),
                        why,
                    })?
                    .ok_or_else(|| HttpError::Bad {
                        host: host.clone(),
                        why: "connection closed before the reply was complete".into(),
                    });
            }
            if buf.len() + n > MAX_RESPONSE {
                return Err(HttpError::Bad {
                    host: host.clone(),
                    why: format!("reply larger than {MAX_RESPONSE} octets"),
                });
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    };
    crate::deadline::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout(host.clone()))?
}

/// A complete reply in `buf`, `None` if more is needed. `eof`: the peer
/// closed, so a body without a length ends here.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if eof {
            Err("no complete header".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "header is not text".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x reply: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            let n = v
                .parse::<usize>()
                .map_err(|_| format!("bad Content-Length {v:?}"))?;
            if n > MAX_RESPONSE {
                return Err(format!(
                    "Content-Length {n} is over the {MAX_RESPONSE}-octet limit"
                ));
            }
            length = Some(n);
        } else if k.eq_ignore_ascii_case("transfer-encoding")
            && v.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let body = buf.get(end.saturating_add(4)..).unwrap_or_default();
    if chunked {
        return dechunk(body).map(|b| b.map(|body| Response { status, body }));
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some(Response {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if eof => Err("connection closed inside the body".into()),
        Some(_) => Ok(None),
        None if eof => Ok(Some(Response {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

/// Decode a chunked body; `None` until the last chunk has arrived. Chunk
/// sizes come from the network: one over [`MAX_RESPONSE`] is refused
/// before any arithmetic is done with it.
fn dechunk(mut b: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&b[..i]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size > MAX_RESPONSE {
            return Err(format!(
                "chunk of {size} octets is over the {MAX_RESPONSE}-octet limit"
            ));
        }
        b = &b[i + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        // size <= MAX_RESPONSE: no overflow.
        let Some(data) = b.get(..size + 2) else {
            return Ok(None);
        };
        if !data.ends_with(b"\r\n") {
            return Err("chunk not followed by CRLF".into());
        }
        out.extend_from_slice(&data[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://oauth2.googleapis.com/token").unwrap(),
            Url {
                host: "oauth2.googleapis.com",
                port: 443,
                path: "/token"
            }
        );
        assert_eq!(
            parse_url("https://127.0.0.1:8443/t?x=1").unwrap(),
            Url {
                host: "127.0.0.1",
                port: 8443,
                path: "/t?x=1"
            }
        );
        assert_eq!(parse_url("https://[::1]:9/").unwrap().host, "::1");
        assert!(parse_url("http://x/").is_err());
        assert!(parse_url("https://x:port/").is_err());
        assert!(parse_url("https:///p").is_err());
    }

    #[test]
    fn replies_with_length_chunked_and_eof() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        let got = parse_response(r, false).unwrap().unwrap();
        assert_eq!((got.status, &got.body[..]), (200, &b"abcd"[..]));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false)
                .unwrap()
                .is_none()
        );
        let c = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let got = parse_response(c, false).unwrap().unwrap();
        assert_eq!((got.status, &got.body[..]), (400, &b"abcde"[..]));
        assert!(parse_response(&c[..c.len() - 7], false).unwrap().is_none());
        let e = b"HTTP/1.0 200 OK\r\n\r\n{}";
        assert!(parse_response(e, false).unwrap().is_none());
        assert_eq!(parse_response(e, true).unwrap().unwrap().body, b"{}");
        assert!(parse_response(b"SMTP 220\r\n\r\n", false).is_err());
        // A chunk that does not end where its size says: refused.
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n";
        assert!(parse_response(c, false).is_err());
        assert!(parse_response(b"HTTP/1.1 200", true).is_err());
    }

    #[test]
    fn sizes_from_the_network_never_overflow() {
        // usize::MAX as a chunk size once made `size + 2` overflow (a panic,
        // and in the release build an abort, at every retry of the mail).
        for size in ["ffffffffffffffff", "fffffffffffffffe", "ffffffff", "10001"] {
            let r =
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n");
            for eof in [false, true] {
                let got = parse_response(r.as_bytes(), eof);
                assert!(got.is_err(), "{size}: {got:?}");
            }
        }
        // Too many hex digits for a usize.
        let r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n";
        assert!(parse_response(r, false).is_err());
        for len in ["18446744073709551615", "99999999999999999999999", "65537"] {
            let r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n{{}}");
            assert!(parse_response(r.as_bytes(), false).is_err(), "{len}");
        }
    }
}
