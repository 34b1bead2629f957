//! A fake Open Build Service API on 127.0.0.1: the endpoints korgpkg uses (project and
//! package `_meta`, the file directory with md5s, committed files, uploads into
//! `?rev=upload`, commits, build results), HTTP Basic auth, and a log of every request.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret:pw";

#[derive(Default)]
pub struct Pkg {
    pub files: BTreeMap<String, Vec<u8>>,
    pub upload: BTreeMap<String, Vec<u8>>,
    pub commits: Vec<String>,
}

#[derive(Default)]
pub struct ObsState {
    pub projects: BTreeSet<String>,
    pub packages: BTreeMap<(String, String), Pkg>,
    /// "METHOD /path?query" of every request.
    pub log: Vec<String>,
}

/// The OBS endpoints korgpkg uses, with HTTP Basic auth, on 127.0.0.1.
pub struct FakeObs {
    addr: String,
    pub state: Arc<Mutex<ObsState>>,
}

pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn md5_hex(b: &[u8]) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(b))
}

impl FakeObs {
    pub fn start(projects: &[&str]) -> FakeObs {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(ObsState {
            projects: projects.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || handle(stream, &st));
            }
        });
        FakeObs { addr, state }
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().expect("state").log)
    }
}

pub fn handle(mut stream: TcpStream, state: &Mutex<ObsState>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (code, text) = respond(state, &method, &target, &headers, body);
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

pub fn status(code: &str, summary: &str) -> String {
    format!("<status code=\"{code}\">\n  <summary>{summary}</summary>\n</status>\n")
}

pub fn respond(
    state: &Mutex<ObsState>,
    method: &str,
    target: &str,
    headers: &BTreeMap<String, String>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut st = state.lock().expect("state");
    st.log.push(format!("{method} {target}"));
    let expected = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    if headers.get("authorization") != Some(&expected) {
        return (
            401,
            status("authentication_required", "Authentication required"),
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), pct_decode(v)))
        .collect();
    let seg: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(pct_decode)
        .collect();
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let unknown_project = |p: &str| (404, status("unknown_project", p));
    match (method, seg.as_slice()) {
        ("GET", ["build", prj, "_result"]) => {
            if !st.projects.contains(*prj) {
                return unknown_project(prj);
            }
            (200, format!("<resultlist state=\"abc\">\n  <result project=\"{prj}\" repository=\"Debian_12\" arch=\"x86_64\" code=\"published\" state=\"published\">\n    <status package=\"korg-clang-18\" code=\"succeeded\"/>\n  </result>\n  <result project=\"{prj}\" repository=\"Fedora_Rawhide\" arch=\"aarch64\" code=\"building\" state=\"building\">\n    <status package=\"korg-clang-18\" code=\"failed\">\n      <details>oops</details>\n    </status>\n  </result>\n</resultlist>\n"))
        }
        ("GET", ["source", prj, "_meta"]) => {
            if st.projects.contains(*prj) {
                (200, format!("<project name=\"{prj}\"/>"))
            } else {
                unknown_project(prj)
            }
        }
        (_, ["source", prj, ..]) if !st.projects.contains(*prj) => unknown_project(prj),
        ("GET", ["source", prj, pkg, "_meta"]) => {
            match st
                .packages
                .contains_key(&(prj.to_string(), pkg.to_string()))
            {
                true => (200, format!("<package name=\"{pkg}\" project=\"{prj}\"/>")),
                false => (404, status("unknown_package", pkg)),
            }
        }
        ("PUT", ["source", prj, pkg, "_meta"]) => {
            let meta = String::from_utf8_lossy(&body).into_owned();
            assert!(
                meta.contains(&format!("<package name=\"{pkg}\" project=\"{prj}\">")),
                "{meta}"
            );
            st.packages
                .entry((prj.to_string(), pkg.to_string()))
                .or_default();
            (200, status("ok", "Ok"))
        }
        (_, ["source", prj, pkg, ..])
            if !st
                .packages
                .contains_key(&(prj.to_string(), pkg.to_string())) =>
        {
            (404, status("unknown_package", pkg))
        }
        ("GET", ["source", prj, pkg]) => {
            let p = &st.packages[&(prj.to_string(), pkg.to_string())];
            let mut xml = format!("<directory name=\"{pkg}\" rev=\"{}\">\n", p.commits.len());
            for (name, bytes) in &p.files {
                xml.push_str(&format!(
                    "  <entry name=\"{name}\" md5=\"{}\" size=\"{}\" mtime=\"1\"/>\n",
                    md5_hex(bytes),
                    bytes.len()
                ));
            }
            xml.push_str("</directory>\n");
            (200, xml)
        }
        ("GET", ["source", prj, pkg, file]) if !query.contains_key("rev") => {
            let p = &st.packages[&(prj.to_string(), pkg.to_string())];
            match p.files.get(*file) {
                Some(bytes) => (200, String::from_utf8_lossy(bytes).into_owned()),
                None => (404, status("no_such_file", file)),
            }
        }
        ("PUT", ["source", prj, pkg, file])
            if query.get("rev").map(String::as_str) == Some("upload") =>
        {
            let p = st
                .packages
                .get_mut(&(prj.to_string(), pkg.to_string()))
                .expect("package");
            p.upload.insert(file.to_string(), body);
            (200, status("ok", "Ok"))
        }
        ("POST", ["source", prj, _]) if prj.ends_with(":locked") => {
            (409, status("locked", &format!("project {prj} is locked")))
        }
        ("POST", ["source", prj, pkg])
            if query.get("cmd").map(String::as_str) == Some("commit") =>
        {
            let p = st
                .packages
                .get_mut(&(prj.to_string(), pkg.to_string()))
                .expect("package");
            let upload = std::mem::take(&mut p.upload);
            p.files.extend(upload);
            p.commits
                .push(query.get("comment").cloned().unwrap_or_default());
            (200, status("ok", "Ok"))
        }
        _ => (400, status("bad_request", "unexpected request")),
    }
}

pub fn oscrc(dir: &Path, api: &str, password: &str) -> PathBuf {
    let p = dir.join("oscrc");
    std::fs::write(
        &p,
        format!("[general]\napiurl = {api}\n\n[{api}]\nuser = {USER}\npass = {password}\n"),
    )
    .expect("oscrc");
    p
}

pub fn puts(log: &[String]) -> BTreeSet<String> {
    log.iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("?rev=upload"))
        .map(|l| {
            let path = l.split(['?', ' ']).nth(1).unwrap_or("");
            path.rsplit('/').next().unwrap_or("").to_string()
        })
        .collect()
}

pub fn commits(log: &[String]) -> usize {
    log.iter()
        .filter(|l| l.starts_with("POST ") && l.contains("cmd=commit"))
        .count()
}

/// `cmd` without any OBS settings from the environment.
pub fn without_obs_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("OBS_USER")
        .env_remove("OBS_PASSWORD")
        .env_remove("OBS_API")
        .env_remove("OSC_CONFIG")
}
