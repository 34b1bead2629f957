//! The download layer against a local HTTP server with injected faults.

mod common;

use common::dir_listing;
use common::server::{Fault, Server};
use korgpkg::fetch::{Cache, FetchOptions, Fetcher};
use korgpkg::Error;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic, non-repeating-ish test data.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn options() -> FetchOptions {
    FetchOptions {
        retries: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        progress: false,
        max_small: 1024 * 1024,
    }
}

fn fetcher(dir: &Path) -> Fetcher {
    Fetcher::new(Cache::new(dir.to_path_buf()), options()).expect("fetcher")
}

#[test]
fn fetcher_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Fetcher>();
    check::<Cache>();
}

#[test]
fn plain_download_lands_in_the_cache() {
    let srv = Server::start();
    let body = data(300_000, 1);
    srv.file("/t.tar.xz", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f
        .fetch_verified(&srv.url("/t.tar.xz"), &sha(&body))
        .unwrap();
    assert_eq!(path, tmp.path().join("sha256").join(sha(&body)));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(dir_listing(&tmp.path().join("partial")).is_empty());
    assert_eq!(srv.requests_for("/t.tar.xz")[0].range, None);
}

#[test]
fn uppercase_sha256_is_accepted_and_garbage_refused() {
    let srv = Server::start();
    let body = data(1000, 2);
    srv.file("/a", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f
        .fetch_verified(&srv.url("/a"), &sha(&body).to_uppercase())
        .unwrap();
    assert_eq!(path, tmp.path().join("sha256").join(sha(&body)));
    let err = f
        .fetch_verified(&srv.url("/a"), "../../etc/passwd")
        .unwrap_err();
    assert!(matches!(err, Error::Verify { .. }), "{err}");
}

#[test]
fn cached_file_is_reused_without_network() {
    let srv = Server::start();
    let body = data(10_000, 3);
    srv.file("/t", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let first = f.fetch_verified(&srv.url("/t"), &sha(&body)).unwrap();
    assert_eq!(srv.requests().len(), 1);
    let second = f.fetch_verified(&srv.url("/t"), &sha(&body)).unwrap();
    assert_eq!(first, second);
    assert_eq!(srv.requests().len(), 1, "second fetch went to the network");
    // A fresh fetcher on the same cache (another run) does not download either.
    let again = fetcher(tmp.path());
    again.fetch_verified(&srv.url("/t"), &sha(&body)).unwrap();
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn interrupted_download_resumes_with_range() {
    let srv = Server::start();
    let body = data(500_000, 4);
    srv.file("/big", body.clone());
    srv.fault("/big", Fault::DropAfter(123_456));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/big"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    let reqs = srv.requests_for("/big");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=123456-"));
    assert!(dir_listing(&tmp.path().join("partial")).is_empty());
}

#[test]
fn partial_file_from_an_earlier_run_is_resumed() {
    let srv = Server::start();
    let body = data(200_000, 5);
    srv.file("/big", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("partial")).unwrap();
    std::fs::write(
        tmp.path()
            .join("partial")
            .join(format!("{}.part", sha(&body))),
        &body[..50_000],
    )
    .unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/big"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    let reqs = srv.requests_for("/big");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=50000-"));
}

#[test]
fn server_ignoring_range_still_yields_the_right_file() {
    let srv = Server::start();
    let body = data(400_000, 6);
    srv.file("/big", body.clone());
    srv.fault("/big", Fault::NoRange);
    srv.fault("/big", Fault::DropAfter(100_000));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/big"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    let reqs = srv.requests_for("/big");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=100000-"));
}

#[test]
fn unsatisfiable_range_restarts_from_zero() {
    let srv = Server::start();
    let body = data(20_000, 7);
    srv.file("/f", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("partial")).unwrap();
    // A stale .part longer than the file: the server answers 416.
    std::fs::write(
        tmp.path()
            .join("partial")
            .join(format!("{}.part", sha(&body))),
        data(30_000, 8),
    )
    .unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    let ranges: Vec<_> = srv
        .requests_for("/f")
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=30000-".to_string()), None]);
}

#[test]
fn complete_partial_file_is_finished_without_downloading_again() {
    let srv = Server::start();
    let body = data(20_000, 9);
    srv.file("/f", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("partial")).unwrap();
    std::fs::write(
        tmp.path()
            .join("partial")
            .join(format!("{}.part", sha(&body))),
        &body,
    )
    .unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(srv.requests_for("/f").len(), 1, "only the 416 probe");
}

#[test]
fn transient_errors_are_retried() {
    let srv = Server::start();
    let body = data(5_000, 10);
    srv.file("/f", body.clone());
    srv.fault("/f", Fault::Status(503, 2));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(srv.requests_for("/f").len(), 3);

    srv.file("/s", b"small".to_vec());
    srv.fault("/s", Fault::Status(429, 1));
    assert_eq!(f.fetch_small(&srv.url("/s")).unwrap(), b"small");
    assert_eq!(srv.requests_for("/s").len(), 2);
}

#[test]
fn permanent_server_error_fails_after_retries() {
    let srv = Server::start();
    let body = data(5_000, 11);
    srv.file("/f", body.clone());
    srv.fault("/f", Fault::Status(500, usize::MAX));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path()); // retries: 3
    let err = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert_eq!(err.exit_code(), 6);
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 500 Internal Server Error after 4 attempts"),
        "{msg}"
    );
    assert!(msg.contains(&srv.url("/f")), "{msg}");
    assert_eq!(srv.requests_for("/f").len(), 4);
    assert!(dir_listing(&tmp.path().join("sha256")).is_empty());
}

#[test]
fn not_found_fails_at_once() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let err = f
        .fetch_verified(&srv.url("/missing"), &sha(b"x"))
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(err.to_string().ends_with("HTTP 404 Not Found"), "{err}");
    assert_eq!(srv.requests_for("/missing").len(), 1);

    let err = f.fetch_small(&srv.url("/missing.asc")).unwrap_err();
    assert_eq!(err.exit_code(), 6);
    assert_eq!(srv.requests_for("/missing.asc").len(), 1);
}

#[test]
fn connection_refused_is_a_network_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let url = format!("http://127.0.0.1:{port}/f");
    let err = f.fetch_verified(&url, &sha(b"x")).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("connection refused after 4 attempts"),
        "{err}"
    );
}

#[test]
fn wrong_sha256_is_a_verify_error_and_leaves_nothing() {
    let srv = Server::start();
    let body = data(50_000, 12);
    srv.file("/f", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let wrong = sha(b"something else");
    let err = f.fetch_verified(&srv.url("/f"), &wrong).unwrap_err();
    assert!(matches!(err, Error::Verify { .. }), "{err}");
    assert_eq!(err.exit_code(), 5);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "sha256 mismatch: expected {wrong}, got {}",
            sha(&body)
        )),
        "{msg}"
    );
    assert!(dir_listing(&tmp.path().join("sha256")).is_empty());
    assert!(dir_listing(&tmp.path().join("partial")).is_empty());
}

#[test]
fn corrupted_cached_file_is_deleted_and_downloaded_again() {
    let srv = Server::start();
    let body = data(40_000, 13);
    srv.file("/f", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();

    // lookup notices the corruption and deletes the file.
    std::fs::write(&path, b"bit rot").unwrap();
    assert_eq!(f.cache().lookup(&sha(&body)).unwrap(), None);
    assert!(!path.exists());
    assert_eq!(f.cache().lookup(&sha(&body)).unwrap(), None);

    // fetch_verified does the same and downloads it again.
    let again = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), body);
    std::fs::write(&path, b"more bit rot").unwrap();
    let third = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(third).unwrap(), body);
    assert_eq!(srv.requests_for("/f").len(), 3);
    assert_eq!(f.cache().lookup(&sha(&body)).unwrap(), Some(path));
}

#[test]
fn html_page_is_refused_by_fetch_small_but_not_by_fetch_small_index() {
    let srv = Server::start();
    srv.file(
        "/sha256sums.asc",
        b"-----BEGIN PGP SIGNED MESSAGE-----\n".to_vec(),
    );
    srv.fault("/sha256sums.asc", Fault::Html);
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let err = f.fetch_small(&srv.url("/sha256sums.asc")).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("got an HTML page, not the file: is the mirror URL right?"),
        "{err}"
    );
    let page = f.fetch_small_index(&srv.url("/sha256sums.asc")).unwrap();
    assert!(page.starts_with(b"<!DOCTYPE html>"));

    // Sniffed from the body too, whatever the Content-Type says.
    srv.file("/sig", b"\n  <HTML><body>oops</body></HTML>".to_vec());
    let err = f.fetch_small(&srv.url("/sig")).unwrap_err();
    assert!(err.to_string().contains("HTML page"), "{err}");

    // And a tarball URL answered with an HTML page says so, not just "mismatch".
    srv.fault("/t.tar.xz", Fault::Html);
    let err = f
        .fetch_verified(&srv.url("/t.tar.xz"), &sha(b"x"))
        .unwrap_err();
    assert!(err.to_string().contains("HTML page"), "{err}");
}

#[test]
fn directory_listing_is_served_for_fetch_small_index() {
    let srv = Server::start();
    srv.file(
        "/pub/tools/llvm/files/llvm-18.1.8-x86_64.tar.xz",
        b"x".to_vec(),
    );
    srv.file("/pub/tools/llvm/files/sub/inner", b"y".to_vec());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let page = f
        .fetch_small_index(&srv.url("/pub/tools/llvm/files/"))
        .unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("<a href=\"llvm-18.1.8-x86_64.tar.xz\">"),
        "{page}"
    );
    assert!(page.contains("<a href=\"sub/\">"), "{page}");
}

#[test]
fn revalidated_small_files_are_kept_and_revalidated_with_if_none_match() {
    let srv = Server::start();
    srv.file("/sums.asc", b"first\n".to_vec());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let url = srv.url("/sums.asc");
    assert_eq!(f.fetch_small_revalidated(&url, false).unwrap(), b"first\n");
    // Unchanged: a conditional request, answered 304, gives the kept bytes.
    assert_eq!(f.fetch_small_revalidated(&url, false).unwrap(), b"first\n");
    let log = srv.requests_for("/sums.asc");
    assert_eq!(log.len(), 2);
    assert!(log[0].if_none_match.is_none() && log[1].if_none_match.is_some());
    // Changed: the new bytes, kept in turn.
    srv.file("/sums.asc", b"second\n".to_vec());
    assert_eq!(f.fetch_small_revalidated(&url, false).unwrap(), b"second\n");
    assert_eq!(f.fetch_small_revalidated(&url, false).unwrap(), b"second\n");
    // A damaged kept copy is not trusted blindly: without its validators it is fetched.
    for e in std::fs::read_dir(tmp.path().join("http")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::write(&p, b"{not json").unwrap();
        }
    }
    let n = srv.requests_for("/sums.asc").len();
    assert_eq!(f.fetch_small_revalidated(&url, false).unwrap(), b"second\n");
    let log = srv.requests_for("/sums.asc");
    assert_eq!(log.len(), n + 1);
    assert!(log[n].if_none_match.is_none());
}

#[test]
fn small_files_over_the_limit_are_refused() {
    let srv = Server::start();
    srv.file("/big.asc", data(1024 * 1024 + 1, 14));
    srv.file("/ok.asc", data(1024 * 1024, 15));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let err = f.fetch_small(&srv.url("/big.asc")).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(err.to_string().contains("limit"), "{err}");
    assert_eq!(
        f.fetch_small(&srv.url("/ok.asc")).unwrap().len(),
        1024 * 1024
    );

    let big = common::write(tmp.path(), "big.asc", &data(1024 * 1024 + 1, 16));
    let url = format!("file://{}", big.display());
    assert!(f
        .fetch_small(&url)
        .unwrap_err()
        .to_string()
        .contains("limit"));
}

#[test]
fn small_file_download_is_retried_after_a_drop() {
    let srv = Server::start();
    let body = data(10_000, 17);
    srv.file("/sums", body.clone());
    srv.fault("/sums", Fault::DropAfter(10));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    assert_eq!(f.fetch_small(&srv.url("/sums")).unwrap(), body);
    assert_eq!(srv.requests_for("/sums").len(), 2);
}

#[test]
fn file_urls_are_copied_and_verified() {
    let src = tempfile::tempdir().unwrap();
    let body = data(300_000, 18);
    let file = common::write(src.path(), "t.tar.xz", &body);
    let url = format!("file://{}", file.display());
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let path = f.fetch_verified(&url, &sha(&body)).unwrap();
    assert_eq!(path, tmp.path().join("sha256").join(sha(&body)));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(f.fetch_small(&url).unwrap(), body);

    let err = f.fetch_verified(&url, &sha(b"other")).unwrap_err();
    assert!(matches!(err, Error::Verify { .. }), "{err}");
    assert!(dir_listing(&tmp.path().join("partial")).is_empty());

    let missing = format!("file://{}/nope", src.path().display());
    assert!(f.fetch_verified(&missing, &sha(b"y")).is_err());
}

#[test]
fn fetch_many_returns_results_in_order() {
    let srv = Server::start();
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| data(100_000 + i * 7, 20 + i as u8))
        .collect();
    let mut items = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let p = format!("/f{i}");
        srv.file(&p, b.clone());
        items.push((srv.url(&p), sha(b)));
    }
    srv.fault("/f1", Fault::DropAfter(1000));
    // The same file twice and a failure keep their places.
    items.push(items[0].clone());
    items.push((srv.url("/missing"), sha(b"m")));
    let tmp = tempfile::tempdir().unwrap();
    let f = fetcher(tmp.path());
    let results = f.fetch_many(&items);
    assert_eq!(results.len(), 5);
    for (i, b) in bodies.iter().enumerate() {
        let p = results[i].as_ref().unwrap();
        assert_eq!(p, &tmp.path().join("sha256").join(sha(b)));
        assert_eq!(&std::fs::read(p).unwrap(), b);
    }
    assert_eq!(results[3].as_ref().unwrap(), results[0].as_ref().unwrap());
    assert!(matches!(results[4], Err(Error::Network { .. })));
    assert_eq!(
        srv.requests_for("/f0").len(),
        1,
        "duplicate downloaded twice"
    );
    assert!(f.fetch_many(&[]).is_empty());
}

#[test]
fn progress_bars_do_not_disturb_downloads() {
    let srv = Server::start();
    let body = data(100_000, 30);
    srv.file("/f", body.clone());
    let tmp = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        progress: true,
        ..options()
    };
    let f = Fetcher::new(Cache::new(tmp.path().to_path_buf()), opts).unwrap();
    let path = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
}

#[test]
fn default_options_and_cache_dir() {
    let o = FetchOptions::default();
    assert_eq!(o.retries, 4);
    assert_eq!(o.backoff, Duration::from_millis(500));
    assert_eq!(o.timeout, Duration::from_secs(60));
    assert_eq!(o.max_small, 16 * 1024 * 1024);
    assert!(
        Cache::default_dir().ends_with("korgpkg")
            || Cache::default_dir().ends_with(".korgpkg-cache")
    );
}

#[test]
fn stalled_download_times_out_and_resumes() {
    let srv = Server::start();
    let body = data(100_000, 31);
    srv.file("/f", body.clone());
    srv.fault("/f", Fault::Stall(4096));
    let tmp = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        timeout: Duration::from_millis(300),
        ..options()
    };
    let f = Fetcher::new(Cache::new(tmp.path().to_path_buf()), opts).unwrap();
    let path = f.fetch_verified(&srv.url("/f"), &sha(&body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    let reqs = srv.requests_for("/f");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=4096-"));
}

#[test]
fn timeouts_give_up_with_a_clear_message() {
    let srv = Server::start();
    srv.file("/f", data(100_000, 32));
    for _ in 0..3 {
        srv.fault("/f", Fault::Stall(0));
    }
    let tmp = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        timeout: Duration::from_millis(200),
        retries: 2,
        ..options()
    };
    let f = Fetcher::new(Cache::new(tmp.path().to_path_buf()), opts).unwrap();
    let err = f.fetch_verified(&srv.url("/f"), &sha(b"z")).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
}
