//! `korgpkg serve`: a static, read-only HTTP/1.1 server for a repository directory (for
//! tests and local use). GET and HEAD only; paths with `..` are refused; symlinks inside
//! the directory (the index generations) are followed. One thread per connection.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Serve `dir` on `listen` until killed.
pub fn serve(dir: &Path, listen: &str) -> Result<()> {
    let root = std::fs::canonicalize(dir).ctx(|| format!("opening {}", dir.display()))?;
    let listener =
        TcpListener::bind(listen).map_err(|e| Error::Usage(format!("--listen {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .ctx(|| "reading the listening address".into())?;
    eprintln!("serving {} on http://{addr}/", root.display());
    for stream in listener.incoming().flatten() {
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = handle(&root, stream);
        });
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file a URL path names, if it is a safe relative path.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next()?;
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

fn handle(root: &Path, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut keep_alive = parts.next() == Some("HTTP/1.1");
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                keep_alive = false;
            }
        }
        let conn = if keep_alive { "keep-alive" } else { "close" };
        if method != "GET" && method != "HEAD" {
            write!(
                out,
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        let file = resolve(root, target)
            .filter(|p| p.is_file())
            .and_then(|p| File::open(p).ok());
        match file {
            Some(mut f) => {
                let len = f.metadata()?.len();
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: {conn}\r\n\r\n"
                )?;
                if method == "GET" {
                    std::io::copy(&mut f, &mut out)?;
                }
            }
            None => {
                let body = b"not found\n";
                write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: {conn}\r\n\r\n",
                    body.len()
                )?;
                if method == "GET" {
                    out.write_all(body)?;
                }
            }
        }
        out.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}
