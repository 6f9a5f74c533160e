//! A small HTTP/1.1 server on a Unix socket, on one thread: `poll` over
//! the listener and up to [`MAX_CLIENTS`] connections, `httparse` for the
//! request head, one request per connection (`Connection: close`), as
//! `curl --unix-socket` and `vmm ctl` send them. Everything a client
//! controls is bounded: the head and body sizes, the number of
//! connections, and how long a connection may sit idle; every refusal is
//! a JSON error, and none stops the server.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Connections served at once; one more gets a 503 and is closed.
pub const MAX_CLIENTS: usize = 8;
/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body (every endpoint's body is a small JSON object).
pub const MAX_BODY: usize = 16 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;
/// How long a connection may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a response may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, without a query string.
    pub path: String,
    /// The body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
}

/// One response: a status and an optional JSON body.
#[derive(Debug, PartialEq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body, if any.
    pub body: Option<Value>,
}

impl Response {
    /// `204 No Content`.
    pub fn no_content() -> Self {
        Response { status: 204, body: None }
    }

    /// `200 OK` with `body`.
    pub fn ok(body: Value) -> Self {
        Response { status: 200, body: Some(body) }
    }

    /// An error: `{"error": "<message>"}`, as Firecracker's `fault_message`
    /// is one line saying what to do.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Response { status, body: Some(json!({ "error": message.into() })) }
    }

    fn bytes(&self) -> Vec<u8> {
        let body = self.body.as_ref().map(|b| format!("{b}\n")).unwrap_or_default();
        let mut head =
            format!("HTTP/1.1 {} {}\r\nServer: vmm\r\nConnection: close\r\n", self.status, reason(self.status));
        if self.body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if self.status != 204 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        [head.into_bytes(), body.into_bytes()].concat()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A connection still sending its request.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// What a connection's bytes so far amount to.
enum Parsed {
    /// More bytes needed.
    Partial,
    /// A whole request.
    Done(Request),
    /// A refusal to send before closing.
    Refused(Response),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Refused(Response::error(431, format!("the request head is over {MAX_HEAD} bytes")))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(Response::error(431, format!("more than {MAX_HEADERS} headers")))
        }
        Err(e) => return Parsed::Refused(Response::error(400, format!("malformed HTTP request: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Parsed::Refused(Response::error(431, format!("the request head is over {MAX_HEAD} bytes")));
    }
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if header("transfer-encoding").is_some() {
        return Parsed::Refused(Response::error(411, "send the body with a Content-Length, not chunked"));
    }
    let len = match header("content-length")
        .map(|v| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<usize>().ok()))
    {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return Parsed::Refused(Response::error(400, "Content-Length is not a number")),
    };
    if len > MAX_BODY {
        return Parsed::Refused(Response::error(413, format!("the body is over {MAX_BODY} bytes")));
    }
    if buf.len() < head_len + len {
        return Parsed::Partial;
    }
    let path = req.path.unwrap_or("/");
    Parsed::Done(Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.split('?').next().unwrap_or(path).to_string(),
        body: buf[head_len..head_len + len].to_vec(),
    })
}

/// Sends `resp` and closes the connection; a client that does not read
/// only costs [`WRITE_TIMEOUT`].
fn answer(mut stream: UnixStream, resp: &Response) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if let Err(e) = stream.write_all(&resp.bytes()) {
        tracing::debug!(error = %e, "API client went away before its answer");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Serves `listener` until `stop` returns true, calling `tick` at least
/// every `tick_every` and `handle` for each request.
pub fn serve(
    listener: &UnixListener,
    tick_every: Duration,
    mut stop: impl FnMut() -> bool,
    mut handle: impl FnMut(&Request) -> Response,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut conns: Vec<Conn> = Vec::new();
    while !stop() {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(conns.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        let ms = tick_every.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds owned here.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Connections first (their indices match `fds[1..]`), then accept.
        let mut keep = Vec::with_capacity(conns.len());
        for (mut c, fd) in conns.drain(..).zip(&fds[1..]) {
            let closed = fd.revents != 0 && read_some(&mut c);
            match parse(&c.buf) {
                Parsed::Done(req) => answer(c.stream, &handle(&req)),
                Parsed::Refused(resp) => answer(c.stream, &resp),
                // The peer closed (or failed) before a whole request.
                Parsed::Partial if closed => {}
                Parsed::Partial if c.since.elapsed() > REQUEST_TIMEOUT => {
                    answer(c.stream, &Response::error(408, "the request did not arrive in time"))
                }
                Parsed::Partial => keep.push(c),
            }
        }
        conns = keep;
        if fds[0].revents != 0 {
            accept_all(listener, &mut conns);
        }
    }
    Ok(())
}

/// Reads what is there; true when the peer closed its end (a request
/// may still be whole) or the connection failed.
fn read_some(c: &mut Conn) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                c.buf.extend_from_slice(&chunk[..n]);
                // Past every limit: `parse` refuses it, no need to keep reading.
                if c.buf.len() > MAX_HEAD + MAX_BODY {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn accept_all(listener: &UnixListener, conns: &mut Vec<Conn>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if conns.len() >= MAX_CLIENTS {
                    answer(stream, &Response::error(503, format!("more than {MAX_CLIENTS} clients at once: retry")));
                    continue;
                }
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                conns.push(Conn { stream, buf: Vec::new(), since: Instant::now() });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> Request {
        match parse(buf) {
            Parsed::Done(r) => r,
            Parsed::Partial => panic!("partial"),
            Parsed::Refused(r) => panic!("refused {r:?}"),
        }
    }

    fn refused(buf: &[u8]) -> u16 {
        match parse(buf) {
            Parsed::Refused(r) => r.status,
            _ => panic!("not refused"),
        }
    }

    #[test]
    fn requests_parse_with_and_without_a_body() {
        let r = done(b"GET /vm?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.method.as_str(), r.path.as_str(), r.body.len()), ("GET", "/vm", 0));
        let r = done(b"PUT /vm.balloon HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(r.body, b"{}");
        assert!(matches!(parse(b"PUT /vm.balloon HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"), Parsed::Partial));
        assert!(matches!(parse(b"GET /vm HTTP/1.1\r\n"), Parsed::Partial));
    }

    #[test]
    fn bad_and_oversized_requests_are_refused_with_their_status() {
        assert_eq!(refused(b"GARBAGE\0\r\n\r\n"), 400);
        assert_eq!(refused(b"PUT /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"), 413);
        assert_eq!(refused(b"PUT /x HTTP/1.1\r\nContent-Length: ten\r\n\r\n"), 400);
        assert_eq!(refused(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411);
        let long = [b"GET /".as_slice(), &[b'a'; MAX_HEAD + 1]].concat();
        assert_eq!(refused(&long), 431);
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(refused(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), 431);
    }

    #[test]
    fn responses_are_json_with_a_length() {
        let b = String::from_utf8(Response::error(404, "no such path").bytes()).unwrap();
        assert!(b.starts_with("HTTP/1.1 404 Not Found\r\n"), "{b}");
        assert!(b.ends_with("\r\n\r\n{\"error\":\"no such path\"}\n"), "{b}");
        assert!(b.contains("Content-Length: 25\r\n"), "{b}");
        let b = String::from_utf8(Response::no_content().bytes()).unwrap();
        assert!(!b.contains("Content-Length") && b.starts_with("HTTP/1.1 204"), "{b}");
    }
}
