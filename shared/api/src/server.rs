//! Serving the router over TCP so that every answer is the API's JSON error shape, even
//! the ones hyper writes on its own.
//!
//! hyper's HTTP/1 parser refuses some requests before any handler runs — a request
//! target over 64 KiB (414), a request head over its read buffer (about 400 KiB) or with
//! more than 100 header fields (431), a request line or header it cannot parse (400) —
//! with a bare head (`content-length: 0`, no content type) and then closes the
//! connection. hyper has no hook for these answers, so [`JsonErrorStream`] recognizes
//! exactly that head on the way out and writes the API's JSON error in its place.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::{new_request_id, MAX_URI_BYTES, REQUEST_ID_HEADER};

/// Serves `router` on `listener` until `shutdown` completes (then lets requests in
/// flight finish), with the client address as `ConnectInfo<SocketAddr>` and hyper's own
/// refusals rewritten as JSON errors.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // axum implements `Connected` for the address of a `TapIo` listener, and orphan
    // rules keep this crate from implementing it for `SocketAddr` over its own listener:
    // a tap that does nothing keeps `ConnectInfo<SocketAddr>` (the rate limit's key).
    let listener = JsonErrorListener(listener).tap_io(|_: &mut JsonErrorStream<_>| {});
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The JSON error for a request refused before it reached the router (also the router's
/// own answer to a target over [`MAX_URI_BYTES`]).
pub(crate) fn refused_request(status: StatusCode) -> ApiError {
    match status {
        StatusCode::URI_TOO_LONG => ApiError::new(
            status,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::new(
            status,
            "headers_too_large",
            "the request's header block is too large or has too many fields",
        ),
        _ => ApiError::bad_request(
            "the request is not valid HTTP: its request line or a header cannot be parsed",
        ),
    }
}

/// A listener whose connections are [`JsonErrorStream`]s.
pub struct JsonErrorListener<L>(pub L);

impl<L: Listener> Listener for JsonErrorListener<L> {
    type Io = JsonErrorStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = self.0.accept().await;
        (JsonErrorStream::new(io), address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The statuses of hyper's automatic answers to a request it cannot parse.
const HYPER_REFUSALS: [StatusCode; 3] = [
    StatusCode::BAD_REQUEST,
    StatusCode::URI_TOO_LONG,
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
];

/// hyper's bare head is a status line, `content-length: 0`, `connection: close` and
/// `date`: well under this.
const MAX_BARE_HEAD: usize = 256;

/// A connection that replaces hyper's bare refusal (see the module) by the API's JSON
/// error. All it keeps is that head (at most `MAX_BARE_HEAD` bytes) or the JSON
/// answer, so a connection's memory stays bounded.
pub struct JsonErrorStream<Io> {
    inner: Io,
    /// hyper's bare head, taken from hyper and not yet written. hyper closes the
    /// connection right after it: at shutdown it becomes the JSON answer. Should more
    /// be written first, it was no refusal and goes out as it came.
    held: Option<BareHead>,
    /// Bytes taken and still to be written before anything else.
    out: Vec<u8>,
    out_written: usize,
}

struct BareHead {
    bytes: Vec<u8>,
    status: StatusCode,
    /// The status line as hyper wrote it (`HTTP/1.1 414 URI Too Long`).
    status_line: String,
    date: Option<String>,
}

impl<Io> JsonErrorStream<Io> {
    pub fn new(inner: Io) -> Self {
        Self {
            inner,
            held: None,
            out: Vec::new(),
            out_written: 0,
        }
    }
}

impl<Io: AsyncWrite + Unpin> JsonErrorStream<Io> {
    /// Writes out what was taken and not yet written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_written < self.out.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_written += n;
        }
        self.out.clear();
        self.out_written = 0;
        Poll::Ready(Ok(()))
    }

    fn write_out_next(&mut self, bytes: Vec<u8>) {
        self.out = bytes;
        self.out_written = 0;
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for JsonErrorStream<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for JsonErrorStream<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(held) = this.held.take() {
            this.write_out_next(held.bytes);
        }
        ready!(this.poll_write_out(cx))?;
        // This stream writes no vectors, so hyper hands over all it has buffered as one
        // slice, and a refusal is its last bytes.
        match bare_head_at_end(buf) {
            Some((0, head)) => {
                this.held = Some(head);
                Poll::Ready(Ok(buf.len()))
            }
            Some((start, _)) => Pin::new(&mut this.inner).poll_write(cx, &buf[..start]),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(held) = this.held.take() {
            this.write_out_next(json_answer(&held));
        }
        ready!(this.poll_write_out(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Where hyper's bare refusal head starts when `bytes` end with one.
fn bare_head_at_end(bytes: &[u8]) -> Option<(usize, BareHead)> {
    let window = bytes.len().saturating_sub(MAX_BARE_HEAD);
    let start = window
        + bytes[window..]
            .windows(b"HTTP/1.".len())
            .rposition(|w| w == b"HTTP/1.")?;
    parse_bare_head(&bytes[start..]).map(|head| (start, head))
}

/// `head` read as hyper's refusal: a status of [`HYPER_REFUSALS`], `content-length: 0`
/// and at most `connection: close` and a `date` besides, ending the bytes. Every answer
/// of the router carries a content type and a request id, so none looks like this.
fn parse_bare_head(head: &[u8]) -> Option<BareHead> {
    let text = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let status = StatusCode::from_bytes(code.as_bytes()).ok()?;
    if !HYPER_REFUSALS.contains(&status) {
        return None;
    }
    let (mut empty, mut date) = (false, None);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value == "0" => empty = true,
            "connection" if value.eq_ignore_ascii_case("close") => {}
            "date" => date = Some(value.to_string()),
            _ => return None,
        }
    }
    empty.then(|| BareHead {
        bytes: head.to_vec(),
        status,
        status_line: status_line.to_string(),
        date,
    })
}

/// The API's answer in place of `bare`: same status and date, a JSON body, a request id.
fn json_answer(bare: &BareHead) -> Vec<u8> {
    let request_id = new_request_id();
    let error = refused_request(bare.status);
    tracing::debug!(request_id, status = %bare.status, "refused a request the HTTP parser could not read");
    let body = serde_json::to_vec(&error.to_json()).unwrap_or_default();
    let mut answer = format!(
        "{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{REQUEST_ID_HEADER}: {request_id}\r\n",
        bare.status_line,
        body.len(),
    );
    if let Some(date) = &bare.date {
        answer.push_str(&format!("date: {date}\r\n"));
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Tue, 01 Dec 2026 10:00:00 GMT";

    #[test]
    fn hypers_bare_refusals_are_recognized_at_the_end_of_what_it_writes() {
        let bare = format!(
            "HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
        );
        let (start, head) = bare_head_at_end(bare.as_bytes()).unwrap();
        assert_eq!((start, head.status), (0, StatusCode::URI_TOO_LONG));
        let after_a_response = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{{}}{bare}");
        let (start, head) = bare_head_at_end(after_a_response.as_bytes()).unwrap();
        assert_eq!(&after_a_response[start..], bare);
        assert_eq!(head.date.as_deref(), Some(&DATE[6..]));
        let answer = String::from_utf8(json_answer(&head)).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
    }

    #[test]
    fn answers_of_the_router_and_other_statuses_are_left_alone() {
        for head in [
            format!("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n{DATE}\r\n\r\nx"),
            "HTTP/1.1 400 Bad Request\r\n\r\n".to_string(),
        ] {
            assert!(bare_head_at_end(head.as_bytes()).is_none(), "{head}");
        }
    }
}
