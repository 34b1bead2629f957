//! A tiny HTTP/1.1 test server on 127.0.0.1 (std only): serves files from a map of
//! URL path → bytes and from directories, answers `Range: bytes=N-` with 206, generates
//! autoindex-like listings for paths ending in `/`, injects faults per path and logs
//! every request for assertions. Each connection handles one request (`Connection: close`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A fault injected for one path.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Respond with this status the given number of times, then serve normally.
    Status(u16, usize),
    /// Send headers with the full Content-Length, then close after N body bytes (once).
    DropAfter(usize),
    /// Like `DropAfter`, but hold the connection silent for 3 s before closing (once).
    Stall(usize),
    /// Always serve an HTML error page with 200.
    Html,
    /// Always ignore `Range` and send the whole file with 200.
    NoRange,
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    /// The `If-None-Match` the client sent (a revalidation).
    pub if_none_match: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    dirs: Vec<(String, PathBuf)>,
    faults: HashMap<String, Vec<Fault>>,
    log: Vec<Request>,
}

/// The server; it stops when dropped.
pub struct Server {
    addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Start a server on a free port of 127.0.0.1.
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    thread::spawn(move || handle(conn, &st));
                }
            }
        });
        Server { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Serve `bytes` at `path`.
    pub fn file(&self, path: &str, bytes: impl Into<Vec<u8>>) -> &Self {
        self.lock().files.insert(path.to_string(), bytes.into());
        self
    }

    /// Serve the files below `root` under the URL prefix `prefix` (e.g. `/pub/tools`).
    pub fn dir(&self, prefix: &str, root: &Path) -> &Self {
        let prefix = prefix.trim_end_matches('/').to_string();
        self.lock().dirs.push((prefix, root.to_path_buf()));
        self
    }

    /// Add a fault for `path`.
    pub fn fault(&self, path: &str, fault: Fault) -> &Self {
        self.lock()
            .faults
            .entry(path.to_string())
            .or_default()
            .push(fault);
        self
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().log.clone()
    }

    /// The requests so far for `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
    }
}

/// An autoindex-like HTML page for directory `path` listing `names` (directories end in `/`).
pub fn autoindex(path: &str, names: &[String]) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>Index of {path}</title></head>\n<body>\n<h1>Index of {path}</h1><hr><pre><a href=\"../\">../</a>\n"
    );
    for name in names {
        html.push_str(&format!(
            "<a href=\"{name}\">{name}</a>          01-Jan-2024 00:00       -\n"
        ));
    }
    html.push_str("</pre><hr></body>\n</html>\n");
    html
}

/// The ETag of a body: a quoted prefix of its sha256.
fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(body))[..16])
}

/// How long a [`Fault::Stall`] holds the connection before closing it.
const STALL: Duration = Duration::from_secs(3);

/// What to send for one request.
enum Reply {
    /// 200 (or 206 for a range) with this content type and body; optionally cut off
    /// after N body bytes, closing the connection after waiting the duration.
    Body(&'static str, Vec<u8>, Option<(usize, Duration)>),
    /// This status with an empty body.
    Status(u16),
}

fn handle(mut conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut range = None;
    let mut if_none_match = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
            if k.trim().eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(v.trim().to_string());
            }
        }
    }

    let (reply, no_range) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.log.push(Request {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            if_none_match: if_none_match.clone(),
        });
        let faults = st.faults.entry(path.clone()).or_default();
        let no_range = faults.contains(&Fault::NoRange);
        let html = faults.contains(&Fault::Html);
        // The first one-shot fault applies to this request (Status counts down).
        let now = match faults
            .iter()
            .position(|f| !matches!(f, Fault::Html | Fault::NoRange))
        {
            Some(i) => match faults[i].clone() {
                Fault::Status(code, n) if n > 1 => {
                    faults[i] = Fault::Status(code, n - 1);
                    Some(Fault::Status(code, 1))
                }
                _ => Some(faults.remove(i)),
            },
            None => None,
        };
        let reply = match now {
            Some(Fault::Status(code, _)) => Reply::Status(code),
            _ if html => Reply::Body(
                "text/html",
                b"<!DOCTYPE html>\n<html><body><h1>Welcome to the mirror</h1></body></html>\n"
                    .to_vec(),
                None,
            ),
            now => match content(&st, &path) {
                Some((ctype, body)) => {
                    let cut = match now {
                        Some(Fault::DropAfter(n)) => Some((n, Duration::ZERO)),
                        Some(Fault::Stall(n)) => Some((n, STALL)),
                        _ => None,
                    };
                    Reply::Body(ctype, body, cut)
                }
                None => Reply::Status(404),
            },
        };
        (reply, no_range)
    };

    let _ = match reply {
        Reply::Status(code) => respond(&mut conn, code, "text/plain", &[], &[], &method),
        // Every body has an ETag (its digest); a matching If-None-Match gets a 304.
        Reply::Body(_, body, None)
            if range.is_none() && if_none_match.as_deref() == Some(&etag(&body)) =>
        {
            respond(&mut conn, 304, "text/plain", &[], &[], &method)
        }
        Reply::Body(ctype, body, cut) => send_ranged(
            &mut conn,
            ctype,
            &body,
            range.as_deref(),
            no_range,
            cut,
            &method,
        ),
    };
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

/// The content type and bytes at `path`: a mapped file, a file below a served directory,
/// or a generated listing for a directory path ending in `/`.
fn content(st: &State, path: &str) -> Option<(&'static str, Vec<u8>)> {
    const OCTETS: &str = "application/octet-stream";
    if let Some(b) = st.files.get(path) {
        return Some((OCTETS, b.clone()));
    }
    for (prefix, root) in &st.dirs {
        let Some(rest) = path.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) || rest.split('/').any(|c| c == "..") {
            continue;
        }
        let fs_path = root.join(rest.trim_start_matches('/'));
        if fs_path.is_file() {
            return std::fs::read(&fs_path).ok().map(|b| (OCTETS, b));
        }
        if fs_path.is_dir() && path.ends_with('/') {
            let mut names: Vec<String> = std::fs::read_dir(&fs_path)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() {
                        format!("{n}/")
                    } else {
                        n
                    }
                })
                .collect();
            names.sort();
            return Some(("text/html", autoindex(path, &names).into_bytes()));
        }
    }
    if path.ends_with('/') {
        // A listing of the mapped files below `path`.
        let mut names: Vec<String> = st
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(path))
            .map(|rest| match rest.split_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => rest.to_string(),
            })
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        if !names.is_empty() {
            return Some(("text/html", autoindex(path, &names).into_bytes()));
        }
    }
    None
}

/// Send `body` honouring `Range: bytes=N-` (unless `no_range`); with `cut`, stop after
/// that many body bytes and wait before returning (the caller closes the connection).
fn send_ranged(
    conn: &mut TcpStream,
    ctype: &str,
    body: &[u8],
    range: Option<&str>,
    no_range: bool,
    cut: Option<(usize, Duration)>,
    method: &str,
) -> std::io::Result<()> {
    let start = match range.filter(|_| !no_range) {
        Some(r) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok()),
        None => None,
    };
    let (code, slice, extra) = match start {
        Some(s) if s >= body.len() => {
            let cr = format!("Content-Range: bytes */{}", body.len());
            return respond(conn, 416, "text/plain", &[cr], &[], method);
        }
        Some(s) => (
            206,
            &body[s..],
            vec![format!(
                "Content-Range: bytes {s}-{}/{}",
                body.len() - 1,
                body.len()
            )],
        ),
        None => (200, body, vec![format!("ETag: {}", etag(body))]),
    };
    match cut {
        Some((n, wait)) => {
            write_head(conn, code, ctype, slice.len(), &extra)?;
            conn.write_all(&slice[..n.min(slice.len())])?;
            conn.flush()?;
            thread::sleep(wait);
            Ok(())
        }
        None => respond(conn, code, ctype, &extra, slice, method),
    }
}

fn respond(
    conn: &mut TcpStream,
    code: u16,
    ctype: &str,
    extra: &[String],
    body: &[u8],
    method: &str,
) -> std::io::Result<()> {
    write_head(conn, code, ctype, body.len(), extra)?;
    if method != "HEAD" {
        conn.write_all(body)?;
    }
    Ok(())
}

fn write_head(
    conn: &mut TcpStream,
    code: u16,
    ctype: &str,
    len: usize,
    extra: &[String],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n"
    );
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
}
