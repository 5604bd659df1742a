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
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::{new_request_id, MAX_URI_BYTES, REQUEST_ID_HEADER};

/// How long a client may take to send a request's head (its request line and headers)
/// once it has connected or finished its previous request: a client that trickles its
/// head (slowloris) or connects and says nothing is disconnected, so idle connections
/// cannot use up the server's sockets.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes (then lets requests in
/// flight finish), with the client address as `ConnectInfo<SocketAddr>`, hyper's own
/// refusals rewritten as JSON errors, and a 30-second limit on every request head
/// (`HEADER_READ_TIMEOUT`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_head_timeout(listener, router, shutdown, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with another head timeout (tests).
pub async fn serve_with_head_timeout(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    head_timeout: Duration,
) -> io::Result<()> {
    // hyper's own HTTP/1 server rather than `axum::serve`, which sets no timer and so no
    // head timeout.
    let mut listener = JsonErrorListener(listener);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(address));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A connection's end (a client gone, a head too slow) concerns nobody else.
            let _ = connection.await;
        });
    }
    // Idle connections close now; those with a request in flight once it is answered.
    connections.shutdown().await;
    Ok(())
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

    /// With time paused, the runtime jumps ahead whenever every task waits: the server's
    /// head timer fires without the test waiting for it.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        tokio::spawn(serve_with_head_timeout(
            listener,
            router,
            std::future::pending(),
            Duration::from_secs(30),
        ));

        let mut prompt = tokio::net::TcpStream::connect(address).await.unwrap();
        prompt
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        prompt.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hi"), "{answer}");

        let began = tokio::time::Instant::now();
        let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        // The server hangs up: end of stream (or a reset), never an answer.
        let _ = slow.read_to_end(&mut rest).await;
        assert!(began.elapsed() >= Duration::from_secs(30));
        assert!(!String::from_utf8_lossy(&rest).contains(" 200 "));
    }

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
