//! The status listener (`[status] listen`): a tiny HTTP/1.1 server for
//! `GET /metrics` (the Prometheus text format) and `GET /` (the status
//! page). Written by hand: two read-only pages need no HTTP crate.
//!
//! Bounded so that it can never get in the way of mail: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at once), one request per
//! connection, a request head of at most [`MAX_REQUEST`] bytes (431
//! past it), [`REQUEST_TIMEOUT`] to send it and [`WRITE_TIMEOUT`] to take
//! the answer. Clients outside `[status] allow_clients` (loopback by
//! default) get 403. Each connection is a task of its own, and the snapshot
//! is taken on the blocking pool, so a slow reader holds nothing the
//! sessions or delivery need.
//!
//! Uses `status` (snapshot and renderings), `queue`, `observe` and
//! `deadline`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

use crate::observe::Observer;
use crate::queue::Queue;
use crate::status::{self, render};

/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 4;
/// Largest request head (request line and headers) read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering, how long (and how much, [`MAX_REQUEST`]) unread
/// input is drained before closing: closing with input unread resets the
/// connection, and the client may lose the answer (a 431 to a request
/// still being sent).
const LINGER: Duration = Duration::from_secs(1);

/// Why the status listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// `[status] listen` could not be bound.
    #[error(
        "[status] listen: cannot listen on {addr}: {source} (is another program using that port? \
         choose another, or remove listen to turn the status listener off)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What the listener serves from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The queue, for its depth.
    pub queue: Queue,
    /// The daemon's counters and route states.
    pub observer: Observer,
    /// `[status] allow_clients`.
    pub allow: Arc<Vec<IpNet>>,
    /// Our hostname, for the page's title.
    pub hostname: String,
}

/// Bind `[status] listen`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, WebError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })
}

/// Serve until the task is dropped.
pub async fn serve(listener: TcpListener, src: Source) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!(listen = %a, "status listener: /metrics and / (status page)");
    }
    let slots = Arc::new(smol::lock::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "status listener: accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap: dropping the stream closes it.
        let Some(permit) = slots.try_acquire_arc() else {
            tracing::debug!(client = %peer.ip(), "status listener: busy, connection closed");
            continue;
        };
        let src = src.clone();
        smol::spawn(async move {
            answer(stream, peer.ip(), &src).await;
            drop(permit);
        })
        .detach();
    }
}

/// A parsed request head: method and path (query string dropped).
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// `/metrics`.
    pub path: String,
}

/// Why a request head was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// Over [`MAX_REQUEST`] without the blank line that ends it.
    TooLarge,
    /// Not `METHOD TARGET HTTP/1.x`.
    Malformed,
}

/// Parse a request head (everything up to the blank line).
pub fn parse(head: &[u8]) -> Result<Request, BadRequest> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| BadRequest::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(BadRequest::Malformed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

/// Read the request head: up to the blank line, at most [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, BadRequest> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|_| BadRequest::Malformed)?;
        if n == 0 {
            return Err(BadRequest::Malformed);
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        match head.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) if end + 4 <= MAX_REQUEST => return Ok(head),
            _ if head.len() > MAX_REQUEST => return Err(BadRequest::TooLarge),
            _ => {}
        }
    }
}

/// A whole HTTP/1.1 answer (the connection closes after it).
fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn plain(status: &str, body: &str) -> Vec<u8> {
    response(status, "text/plain; charset=utf-8", body, false)
}

/// Read one request and answer it, within the timeouts.
async fn answer(mut stream: TcpStream, client: IpAddr, src: &Source) {
    let client = client.to_canonical();
    let out = if !src.allow.iter().any(|n| n.contains(&client)) {
        tracing::info!(client = %client, "status listener: refused, not in [status] allow_clients");
        plain(
            "403 Forbidden",
            "not allowed: add this address to [status] allow_clients\n",
        )
    } else {
        match crate::deadline::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
            Err(_) => return,
            Ok(Err(BadRequest::TooLarge)) => {
                plain("431 Request Header Fields Too Large", "request too large\n")
            }
            Ok(Err(BadRequest::Malformed)) => plain("400 Bad Request", "bad request\n"),
            Ok(Ok(head)) => match parse(&head) {
                Err(_) => plain("400 Bad Request", "bad request\n"),
                Ok(req) => route(&req, src).await,
            },
        }
    };
    let _ = crate::deadline::timeout(WRITE_TIMEOUT, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    })
    .await;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = crate::deadline::timeout(LINGER, async {
        let mut buf = [0u8; 1024];
        let mut left = MAX_REQUEST;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn route(req: &Request, src: &Source) -> Vec<u8> {
    let head_only = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return plain(
                "405 Method Not Allowed",
                "only GET and HEAD are served here\n",
            );
        }
    };
    if req.path != "/" && req.path != "/metrics" {
        return plain("404 Not Found", "not found: try / or /metrics\n");
    }
    let (queue, observer) = (src.queue.clone(), src.observer.clone());
    let snap = smol::unblock(move || status::snapshot(&queue, &observer)).await;
    if req.path == "/metrics" {
        response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &render::prometheus(&snap),
            head_only,
        )
    } else {
        response(
            "200 OK",
            "text/html; charset=utf-8",
            &render::html(&snap, &src.hostname),
            head_only,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Request {
                method: "GET".into(),
                path: "/metrics".into()
            })
        );
        assert_eq!(parse(b"GET /\r\n\r\n"), Err(BadRequest::Malformed));
        assert_eq!(
            parse(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
        assert_eq!(parse(b"GET / SMTP/1.0\r\n\r\n"), Err(BadRequest::Malformed));
        assert_eq!(
            parse(b"\xff / HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
    }
}
