//! A short, deterministic fuzzing campaign (the harness is `examples/fuzz.rs`) against
//! the real binary: mutated .deb/.rpm/.ipk files through `inspect` and `publish`,
//! mutated tarballs through `build --from`. No panic, abort or hang, peak RSS under
//! 256 MiB on every run, nothing left in `--out` and no change to the repository after
//! a failure.
//!
//! Environment (all optional): `KORGPKG_FUZZ_SEED` (default 1), `KORGPKG_FUZZ_CASES`
//! (`inspect,publish,build` counts), `KORGPKG_FUZZ_FAMILIES` (`deb,rpm,ipk,tarball,bomb`
//! or `all`; default [`DEFAULT_FAMILIES`]), `KORGPKG_FUZZ_KEEP` (a directory for the
//! inputs of findings). The long campaign and its figures: docs/fuzzing.md.

#[path = "../examples/fuzz.rs"]
#[allow(dead_code)]
mod fuzz;

use std::path::PathBuf;
use std::time::Duration;

/// The input families of the in-suite campaign.
const DEFAULT_FAMILIES: &str = "all";

/// Cases per target: inspect, publish, build.
const DEFAULT_CASES: (usize, usize, usize) = (1500, 150, 600);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[test]
fn mutated_packages_and_tarballs_never_panic_hang_leak_or_leave_files() {
    let (inspect, publish, build) = match env("KORGPKG_FUZZ_CASES") {
        Some(v) => {
            let n: Vec<usize> = v
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .expect("KORGPKG_FUZZ_CASES: inspect,publish,build")
                })
                .collect();
            assert_eq!(n.len(), 3, "KORGPKG_FUZZ_CASES: inspect,publish,build");
            (n[0], n[1], n[2])
        }
        None => DEFAULT_CASES,
    };
    let families = fuzz::Family::parse_list(
        &env("KORGPKG_FUZZ_FAMILIES").unwrap_or_else(|| DEFAULT_FAMILIES.to_string()),
    )
    .expect("KORGPKG_FUZZ_FAMILIES");
    let work = tempfile::tempdir().expect("tmp");
    let cfg = fuzz::Config {
        korgpkg: PathBuf::from(env!("CARGO_BIN_EXE_korgpkg")),
        seed: env("KORGPKG_FUZZ_SEED").map_or(1, |s| s.parse().expect("KORGPKG_FUZZ_SEED")),
        inspect,
        publish,
        build,
        // A debug build on a loaded 2-core machine: generous, a hang never ends.
        timeout: Duration::from_secs(60),
        mem_limit: 4 << 30,
        rss_budget_kib: 256 * 1024,
        jobs: 2,
        work: work.path().join("fuzz"),
        keep: env("KORGPKG_FUZZ_KEEP").map(PathBuf::from),
        verbose: true,
        families,
        bomb_mib: 300,
        bomb_one_in: 40,
    };
    let summary = fuzz::run(&cfg).expect("the fuzzing harness runs");
    eprint!("{}", summary.report());
    assert!(summary.cases > 0, "{}", summary.report());
    assert!(summary.clean(), "{}", summary.report());
    assert!(summary.max_rss_kib < 256 * 1024, "{}", summary.report());
}
